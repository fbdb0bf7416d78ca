//! One DNS question, answered: cluster names from the current [`Zone`], everything else
//! through the upstream resolver (the host's nameservers, with its cache), as CoreDNS's
//! `kubernetes` and `forward`/`cache` plugins do. hickory's server does the framing (UDP
//! and TCP, truncation to the client's payload size).

use std::sync::{Arc, RwLock};

use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::Resolver;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::zone::{Answer, Zone};

/// The zone the handler answers from, swapped whole when Services or Endpoints change.
#[derive(Clone, Default)]
pub struct ZoneHandle(Arc<RwLock<Arc<Zone>>>);

impl ZoneHandle {
    pub fn get(&self) -> Arc<Zone> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, zone: Zone) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(zone);
    }
}

/// What an answer becomes on the wire.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(code: ResponseCode) -> Reply {
        Reply {
            code,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

pub struct ClusterDns {
    zone: ZoneHandle,
    /// None: names outside the cluster are refused (no upstream could be configured).
    upstream: Option<Resolver<TokioRuntimeProvider>>,
}

impl ClusterDns {
    pub fn new(zone: ZoneHandle, upstream: Option<Resolver<TokioRuntimeProvider>>) -> Self {
        ClusterDns { zone, upstream }
    }

    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return Reply::code(ResponseCode::FormErr);
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN {
            return Reply::code(ResponseCode::Refused);
        }
        let owner = query.original().name();
        let qtype = query.query_type();
        let zone = self.zone.get();
        match zone.answer_name(owner, qtype) {
            Answer::Records {
                mut answers,
                additionals,
            } => {
                // An ExternalName's alias outside the cluster: resolve it, so that a stub
                // resolver that does not chase CNAMEs still gets addresses.
                if qtype != RecordType::CNAME {
                    let alias = answers.iter().find_map(|r| match &r.data {
                        RData::CNAME(c) => Some(c.0.to_string()),
                        _ => None,
                    });
                    if let Some(alias) = alias {
                        if zone.answer(&alias, qtype) == Answer::Outside {
                            answers.extend(self.forward(&alias, qtype).await.answers);
                        }
                    }
                }
                Reply {
                    code: ResponseCode::NoError,
                    authoritative: true,
                    answers,
                    authorities: Vec::new(),
                    additionals,
                }
            }
            negative @ (Answer::NoData | Answer::NxDomain) => Reply {
                code: if negative == Answer::NxDomain {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                },
                authoritative: true,
                answers: Vec::new(),
                authorities: vec![zone.soa()],
                additionals: Vec::new(),
            },
            Answer::Outside => self.forward(&owner.to_ascii(), qtype).await,
        }
    }

    /// Ask the upstream resolver (its cache first).
    async fn forward(&self, qname: &str, qtype: RecordType) -> Reply {
        let Some(resolver) = &self.upstream else {
            return Reply::code(ResponseCode::Refused);
        };
        match resolver.lookup(qname, qtype).await {
            Ok(lookup) => Reply {
                code: ResponseCode::NoError,
                authoritative: false,
                answers: lookup.answers().to_vec(),
                authorities: Vec::new(),
                additionals: Vec::new(),
            },
            Err(e) if e.is_no_records_found() => {
                let code = if e.is_nx_domain() {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                };
                let soa = e.into_soa().map(|s| s.into_record_of_rdata());
                Reply {
                    code,
                    authoritative: false,
                    answers: Vec::new(),
                    authorities: soa.into_iter().collect(),
                    additionals: Vec::new(),
                }
            }
            Err(e) => {
                tracing::debug!(name = %qname, error = %e, "upstream lookup failed");
                Reply::code(ResponseCode::ServFail)
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self.reply(request).await;
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = self.upstream.is_some();
        let mut builder = MessageResponseBuilder::from_message_request(request);
        // Answer EDNS with EDNS, so that a client offering a larger payload gets it.
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e
        });
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "DNS response not sent");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: failed,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
