//! The codec against k8s-pb's prost types: what prost encodes we decode to the JSON the API
//! uses, and what we encode prost decodes to the same values.

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde_json::json;

use super::*;

/// A body as client-go's protobuf serializer writes it.
fn body_of(api_version: &str, kind: &str, msg: &impl prost::Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(msg.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

/// The message inside one of our bodies, through prost.
fn raw_of(body: &[u8]) -> Vec<u8> {
    let unknown = Unknown::decode(&body[MAGIC.len()..]).expect("an envelope prost reads");
    unknown.raw.expect("raw")
}

fn pod_json() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web", "tier": "front"},
            "creationTimestamp": "2026-12-01T10:00:00Z",
            "managedFields": [{
                "manager": "kubectl",
                "operation": "Update",
                "time": "2026-12-01T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {}}}
            }],
        },
        "spec": {
            "containers": [{
                "name": "app",
                "image": "skiff/busybox:latest",
                "command": ["sh", "-c", "sleep 3600"],
                "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "name": "https"}],
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "100m"}},
                "securityContext": {"allowPrivilegeEscalation": false, "runAsUser": 0},
                "livenessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true}],
            }],
            "volumes": [
                {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "cfg", "configMap": {"name": "settings", "defaultMode": 420}},
            ],
            "terminationGracePeriodSeconds": 30,
            "nodeName": "n1",
        },
        "status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "10.244.0.5",
            "podIPs": [{"ip": "10.244.0.5"}],
            "startTime": "2026-12-01T10:00:01Z",
        },
    })
}

#[test]
fn a_pod_we_encode_is_the_pod_prost_reads_and_comes_back_unchanged() {
    let pod = pod_json();
    let body = encode(&pod).expect("encodes");
    let env = envelope(&body).expect("envelope");
    assert_eq!((env.api_version.as_str(), env.kind.as_str()), ("v1", "Pod"));

    let p = core::Pod::decode(raw_of(&body).as_slice()).expect("prost decodes our Pod");
    let spec = p.spec.as_ref().expect("spec");
    let c = &spec.containers[0];
    assert_eq!(c.ports[0].container_port, Some(80));
    assert_eq!(c.ports[1].name.as_deref(), Some("https"));
    let limits = &c.resources.as_ref().expect("resources").limits;
    assert_eq!(limits["cpu"].string.as_deref(), Some("500m"));
    assert_eq!(limits["memory"].string.as_deref(), Some("64Mi"));
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let port = c
        .liveness_probe
        .as_ref()
        .and_then(|p| p.handler.as_ref())
        .and_then(|h| h.http_get.as_ref())
        .and_then(|g| g.port.as_ref());
    assert_eq!(port.and_then(|p| p.str_val.as_deref()), Some("http"));
    assert_eq!(port.and_then(|p| p.r#type), Some(1));
    let created = p
        .metadata
        .as_ref()
        .and_then(|m| m.creation_timestamp.as_ref())
        .and_then(|t| t.seconds);
    assert_eq!(created, Some(1_796_119_200));
    let cfg = spec.volumes[1]
        .volume_source
        .as_ref()
        .and_then(|s| s.config_map.as_ref());
    let cfg_name = cfg
        .and_then(|c| c.local_object_reference.as_ref())
        .and_then(|r| r.name.as_deref());
    assert_eq!(
        cfg_name,
        Some("settings"),
        "inlined fields travel in the embedded message"
    );
    let status = p.status.as_ref().expect("status");
    assert_eq!(status.pod_ips[0].ip.as_deref(), Some("10.244.0.5"));

    assert_eq!(decode(&body).expect("decodes"), pod);
}

#[test]
fn a_service_prost_encodes_decodes_with_int_and_string_target_ports() {
    let svc = core::Service {
        metadata: Some(meta::ObjectMeta {
            name: Some("web".into()),
            // What Go writes for unset non-pointer fields: empty strings, the zero time.
            generate_name: Some(String::new()),
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }),
        spec: Some(core::ServiceSpec {
            r#type: Some("NodePort".into()),
            ports: vec![
                core::ServicePort {
                    name: Some("http".into()),
                    port: Some(80),
                    target_port: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: Some(String::new()),
                    }),
                    node_port: Some(0),
                    ..Default::default()
                },
                core::ServicePort {
                    name: Some("https".into()),
                    port: Some(443),
                    target_port: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: Some("https".into()),
                    }),
                    ..Default::default()
                },
            ],
            selector: [("app".to_string(), "web".to_string())].into(),
            cluster_ips: vec!["10.96.0.10".into()],
            ..Default::default()
        }),
        status: None,
    };
    let got = decode(&body_of("v1", "Service", &svc)).expect("decodes");
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "type": "NodePort",
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 0},
                    {"name": "https", "port": 443, "targetPort": "https"},
                ],
                "selector": {"app": "web"},
                "clusterIPs": ["10.96.0.10"],
            },
        })
    );
    // And back: prost reads the ports as it wrote them.
    let back =
        core::Service::decode(raw_of(&encode(&got).expect("encodes")).as_slice()).expect("prost");
    let ports = &back.spec.as_ref().expect("spec").ports;
    assert_eq!(
        ports[0].target_port.as_ref().and_then(|p| p.int_val),
        Some(8080)
    );
    assert_eq!(
        ports[1]
            .target_port
            .as_ref()
            .and_then(|p| p.str_val.as_deref()),
        Some("https")
    );
}

#[test]
fn a_resource_quota_from_kubectl_create_quota_decodes_its_hard_map() {
    let quota = core::ResourceQuota {
        metadata: Some(meta::ObjectMeta {
            name: Some("q".into()),
            ..Default::default()
        }),
        spec: Some(core::ResourceQuotaSpec {
            hard: [
                (
                    "pods".to_string(),
                    Quantity {
                        string: Some("2".into()),
                    },
                ),
                (
                    "requests.cpu".to_string(),
                    Quantity {
                        string: Some("1500m".into()),
                    },
                ),
            ]
            .into(),
            scopes: vec!["NotTerminating".into()],
            ..Default::default()
        }),
        status: Some(core::ResourceQuotaStatus::default()),
    };
    let got = decode(&body_of("v1", "ResourceQuota", &quota)).expect("decodes");
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "q"},
            "spec": {"hard": {"pods": "2", "requests.cpu": "1500m"}, "scopes": ["NotTerminating"]},
            "status": {},
        })
    );
    let round = decode(&encode(&got).expect("encodes")).expect("decodes again");
    assert_eq!(round, got);
}

#[test]
fn an_eviction_from_kubectl_drain_decodes_with_its_delete_options() {
    let eviction = k8s_pb::api::policy::v1::Eviction {
        metadata: Some(meta::ObjectMeta {
            name: Some("web-1".into()),
            namespace: Some("default".into()),
            ..Default::default()
        }),
        delete_options: Some(meta::DeleteOptions {
            grace_period_seconds: Some(0),
            preconditions: Some(meta::Preconditions {
                uid: Some("u-1".into()),
                resource_version: None,
            }),
            propagation_policy: Some("Background".into()),
            ..Default::default()
        }),
    };
    let got = decode(&body_of("policy/v1", "Eviction", &eviction)).expect("decodes");
    assert_eq!(
        got,
        json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "web-1", "namespace": "default"},
            "deleteOptions": {"gracePeriodSeconds": 0, "preconditions": {"uid": "u-1"}, "propagationPolicy": "Background"},
        })
    );
}

#[test]
fn delete_options_and_status_live_in_meta_for_every_group() {
    assert_eq!(
        message_for("policy/v1", "DeleteOptions").map(|m| m.module),
        Some("apimachinery/pkg/apis/meta/v1")
    );
    assert_eq!(message_for("v1", "Status").map(|m| m.name), Some("Status"));
    assert_eq!(
        message_for("rbac.authorization.k8s.io/v1", "ClusterRoleBinding").map(|m| m.module),
        Some("api/rbac/v1")
    );
    assert_eq!(
        message_for("v1", "PodList").map(|m| m.name),
        Some("PodList")
    );
    let status = json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": "pods \"x\" not found", "reason": "NotFound",
        "details": {"name": "x", "kind": "pods"}, "code": 404,
    });
    let back =
        meta::Status::decode(raw_of(&encode(&status).expect("encodes")).as_slice()).expect("prost");
    assert_eq!(back.code, Some(404));
    assert_eq!(back.reason.as_deref(), Some("NotFound"));
    assert_eq!(back.details.and_then(|d| d.name).as_deref(), Some("x"));
}

#[test]
fn rbac_rules_keep_non_resource_urls_and_lists_their_items() {
    let list = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleList",
        "metadata": {"resourceVersion": "7", "continue": "abc"},
        "items": [{
            "metadata": {"name": "view"},
            "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}],
        }],
    });
    let body = encode(&list).expect("encodes");
    let back =
        k8s_pb::api::rbac::v1::ClusterRoleList::decode(raw_of(&body).as_slice()).expect("prost");
    assert_eq!(
        back.items[0].rules[0].non_resource_ur_ls,
        vec!["/healthz".to_string()]
    );
    assert_eq!(
        back.metadata.and_then(|m| m.resource_version).as_deref(),
        Some("7")
    );
    assert_eq!(decode(&body).expect("decodes"), list);
}

#[test]
fn watch_frames_carry_the_enveloped_object() {
    let pod = pod_json();
    let frame = watch_frame("ADDED", &pod).expect("frame");
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(len + 4, frame.len());
    let event = meta::WatchEvent::decode(&frame[4..]).expect("prost reads the WatchEvent");
    assert_eq!(event.r#type.as_deref(), Some("ADDED"));
    let raw = event.object.and_then(|o| o.raw).expect("raw");
    assert!(raw.starts_with(MAGIC));
    let (kind, obj, used) = read_watch_frame(&frame).expect("reads").expect("whole");
    assert_eq!((kind.as_str(), used), ("ADDED", frame.len()));
    assert_eq!(obj, pod);
    assert_eq!(read_watch_frame(&frame[..frame.len() - 1]), Ok(None));
}

#[test]
fn bad_bodies_are_errors_never_panics() {
    assert_eq!(decode(b""), Err(ProtobufError::Empty));
    assert_eq!(decode(b"{\"kind\":\"Pod\"}"), Err(ProtobufError::NoMagic));
    let body = encode(&pod_json()).expect("encodes");
    for cut in [5, 10, body.len() / 2, body.len() - 1] {
        assert!(decode(&body[..cut]).is_err(), "cut at {cut}");
    }
    let mut unknown = body_of("v1", "Frobnicator", &core::Pod::default());
    assert!(matches!(
        decode(&unknown),
        Err(ProtobufError::UnknownKind { .. })
    ));
    unknown.truncate(4);
    assert_eq!(decode(&unknown).map(|_| ()), Err(ProtobufError::EmptyBody));
    assert_eq!(
        decode(&wrap("", "", b"")).map(|_| ()),
        Err(ProtobufError::MissingKind)
    );
    // Seeded mutations of a real body: whatever comes out, nothing panics.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..5_000 {
        let mut b = body.clone();
        for _ in 0..1 + (seed % 4) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize) % b.len();
            b[i] = (seed >> 32) as u8;
        }
        let _ = decode(&b);
    }
    assert_eq!(summarize(b""), "<empty>");
    assert_eq!(summarize(&[0x6b, 0x38]), "6b38");
}

#[test]
fn nesting_beyond_any_object_is_refused() {
    // A RawExtension holding an envelope holding a list holding ... 200 levels of
    // embedded objects: refused, not followed down the stack.
    let mut obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
    for _ in 0..200 {
        obj = json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [obj]});
    }
    let mut inner = encode(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}))
        .expect("encodes");
    for _ in 0..200 {
        let mut ext = Vec::new();
        wire::put_bytes(&mut ext, 1, &inner);
        let mut list = Vec::new();
        wire::put_bytes(&mut list, 2, &ext);
        let mut body = MAGIC.to_vec();
        let mut tm = Vec::new();
        wire::put_bytes(&mut tm, 1, b"v1");
        wire::put_bytes(&mut tm, 2, b"List");
        wire::put_bytes(&mut body, 1, &tm);
        wire::put_bytes(&mut body, 2, &list);
        inner = body;
    }
    assert_eq!(decode(&inner), Err(ProtobufError::TooDeep));
}

#[test]
fn every_served_kind_and_its_list_have_a_protobuf_message() {
    for info in crate::api::resources::registry().all() {
        let api_version = info.api_version();
        let msg = message_for(&api_version, info.kind)
            .unwrap_or_else(|| panic!("no message for {api_version} {}", info.kind));
        assert!(
            msg.fields.iter().any(|f| f.json == "metadata"),
            "{}",
            info.kind
        );
        if !crate::api::resources::is_review(info) {
            let list = message_for(&api_version, &info.list_kind())
                .unwrap_or_else(|| panic!("no message for {api_version} {}", info.list_kind()));
            assert!(list.fields.iter().any(|f| f.json == "items"));
        }
    }
    for (api_version, kind) in [
        ("policy/v1", "Eviction"),
        ("v1", "Binding"),
        ("autoscaling/v1", "Scale"),
    ] {
        assert!(message_for(api_version, kind).is_some(), "{kind}");
    }
}

#[test]
fn a_csr_with_conditions_and_bytes_decodes_as_kubectl_certificate_approve_sends_it() {
    use k8s_pb::api::certificates::v1 as certs;
    let csr = certs::CertificateSigningRequest {
        metadata: Some(meta::ObjectMeta {
            name: Some("node-csr".into()),
            ..Default::default()
        }),
        spec: Some(certs::CertificateSigningRequestSpec {
            request: Some(b"-----BEGIN CERTIFICATE REQUEST-----".to_vec()),
            signer_name: Some("kubernetes.io/kube-apiserver-client".into()),
            usages: vec!["client auth".into()],
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        status: Some(certs::CertificateSigningRequestStatus {
            conditions: vec![certs::CertificateSigningRequestCondition {
                r#type: Some("Approved".into()),
                status: Some("True".into()),
                reason: Some("KubectlApprove".into()),
                last_update_time: Some(meta::Time {
                    seconds: Some(1_796_119_200),
                    nanos: Some(0),
                }),
                ..Default::default()
            }],
            certificate: None,
        }),
    };
    let got = decode(&body_of(
        "certificates.k8s.io/v1",
        "CertificateSigningRequest",
        &csr,
    ))
    .expect("decodes");
    assert_eq!(
        got["spec"]["request"],
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0="
    );
    assert_eq!(got["spec"]["expirationSeconds"], 3600);
    let cond = &got["status"]["conditions"][0];
    assert_eq!(cond["lastUpdateTime"], "2026-12-01T10:00:00Z");
    assert_eq!(cond["reason"], "KubectlApprove");
    assert!(cond.get("lastTransitionTime").is_none());
}
