//! The ordered key-value engine under the store's records: RocksDB (durable, the default)
//! or memory (tests and the simulation: nothing survives the process, everything else the
//! store promises holds). `persist.rs` writes the same keys and batches to either.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use super::StoreError;

/// Where the store keeps its records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// RocksDB in the store's directory: acknowledged writes are on disk.
    #[default]
    RocksDb,
    /// A map in this process: gone with it.
    Memory,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rocksdb" => Ok(Backend::RocksDb),
            "memory" => Ok(Backend::Memory),
            other => Err(format!(
                "unknown store backend {other:?} (rocksdb or memory)"
            )),
        }
    }
}

/// One change of a [`Batch`].
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Keys in `[from, to)`.
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// Changes applied together, all or none.
#[derive(Default)]
pub struct Batch(Vec<Op>);

impl Batch {
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.0.push(Op::Put(key.into(), value.into()));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.0.push(Op::Delete(key.into()));
    }

    pub fn delete_range(&mut self, from: impl Into<Vec<u8>>, to: impl Into<Vec<u8>>) {
        self.0.push(Op::DeleteRange(from.into(), to.into()));
    }
}

pub enum Kv {
    RocksDb(DB),
    Memory(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>),
}

fn io(e: rocksdb::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl Kv {
    pub fn open(backend: &Backend, path: &Path) -> Result<Kv, StoreError> {
        match backend {
            Backend::RocksDb => {
                let mut opts = Options::default();
                opts.create_if_missing(true);
                Ok(Kv::RocksDb(DB::open(&opts, path).map_err(io)?))
            }
            Backend::Memory => Ok(Kv::Memory(Mutex::new(BTreeMap::new()))),
        }
    }

    fn map(
        m: &Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    ) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Kv::RocksDb(db) => db.get(key).map_err(io),
            Kv::Memory(m) => Ok(Self::map(m).get(key).cloned()),
        }
    }

    /// Call `f` on each entry whose key starts with `prefix`, in key order, while it
    /// returns true.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        match self {
            Kv::RocksDb(db) => {
                for item in db.prefix_iterator(prefix) {
                    let (k, v) = item.map_err(io)?;
                    if !k.starts_with(prefix) || !f(&k, &v)? {
                        break;
                    }
                }
            }
            Kv::Memory(m) => {
                let map = Self::map(m);
                for (k, v) in map.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded)) {
                    if !k.starts_with(prefix) || !f(k, v)? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Call `f` on each entry from `from` (included) down, in reverse key order, while it
    /// returns true.
    pub fn scan_back_from(
        &self,
        from: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        match self {
            Kv::RocksDb(db) => {
                for item in db.iterator(IteratorMode::From(from, Direction::Reverse)) {
                    let (k, v) = item.map_err(io)?;
                    if !f(&k, &v)? {
                        break;
                    }
                }
            }
            Kv::Memory(m) => {
                let map = Self::map(m);
                for (k, v) in map
                    .range::<[u8], _>((Bound::Unbounded, Bound::Included(from)))
                    .rev()
                {
                    if !f(k, v)? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Apply `batch` atomically; with `sync`, durable when this returns (RocksDB's WAL
    /// synced).
    pub fn write(&self, batch: Batch, sync: bool) -> Result<(), StoreError> {
        match self {
            Kv::RocksDb(db) => {
                let mut b = WriteBatch::default();
                for op in batch.0 {
                    match op {
                        Op::Put(k, v) => b.put(k, v),
                        Op::Delete(k) => b.delete(k),
                        Op::DeleteRange(from, to) => b.delete_range(from, to),
                    }
                }
                let mut opts = WriteOptions::default();
                opts.set_sync(sync);
                db.write_opt(b, &opts).map_err(io)
            }
            Kv::Memory(m) => {
                let mut map = Self::map(m);
                for op in batch.0 {
                    match op {
                        Op::Put(k, v) => {
                            map.insert(k, v);
                        }
                        Op::Delete(k) => {
                            map.remove(&k);
                        }
                        Op::DeleteRange(from, to) => {
                            if from < to {
                                let doomed: Vec<Vec<u8>> =
                                    map.range(from..to).map(|(k, _)| k.clone()).collect();
                                for k in doomed {
                                    map.remove(&k);
                                }
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both engines answer the same scans and batches the same way.
    fn exercise(kv: &Kv) {
        let mut b = Batch::default();
        for k in ["a/1", "a/2", "a/3", "b/1", "h/1", "h/2", "h/3"] {
            b.put(k.as_bytes(), format!("v{k}").into_bytes());
        }
        kv.write(b, true).unwrap();
        let mut seen = Vec::new();
        kv.scan_prefix(b"a/", |k, _| {
            seen.push(String::from_utf8_lossy(k).to_string());
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, ["a/1", "a/2", "a/3"]);
        let mut back = Vec::new();
        kv.scan_back_from(b"h/2", |k, _| {
            back.push(String::from_utf8_lossy(k).to_string());
            Ok(back.len() < 3)
        })
        .unwrap();
        assert_eq!(back, ["h/2", "h/1", "b/1"]);
        let mut b = Batch::default();
        b.delete(b"a/2".to_vec());
        b.delete_range(b"h/1".to_vec(), b"h/3".to_vec());
        kv.write(b, false).unwrap();
        assert_eq!(kv.get(b"a/2").unwrap(), None);
        assert_eq!(kv.get(b"a/3").unwrap().as_deref(), Some(&b"va/3"[..]));
        assert_eq!(kv.get(b"h/1").unwrap(), None);
        assert_eq!(kv.get(b"h/2").unwrap(), None);
        assert!(kv.get(b"h/3").unwrap().is_some());
    }

    #[test]
    fn rocksdb_and_memory_engines_agree() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&Kv::open(&Backend::RocksDb, dir.path()).unwrap());
        exercise(&Kv::open(&Backend::Memory, dir.path()).unwrap());
    }

    #[test]
    fn backends_are_named_as_in_the_config() {
        assert_eq!("memory".parse::<Backend>(), Ok(Backend::Memory));
        assert_eq!("rocksdb".parse::<Backend>(), Ok(Backend::RocksDb));
        assert!("etcd".parse::<Backend>().is_err());
    }
}
