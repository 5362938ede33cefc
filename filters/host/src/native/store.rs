//! The proxy-wide integrity store of the native module: process memory, as
//! Envoy's dynamic modules have no shared-data store. It keeps proxy-wasm
//! shared data's semantics, which the integrity guard relies on: a value
//! and a version per key, every write bumps the version, and a write that
//! names a version succeeds only while the key still has it
//! (compare-and-swap). Every worker and every config generation of the
//! process share it (the module is loaded with `do_not_close`, so a config
//! push never unloads it); an Envoy restart or hot restart starts a new
//! process with an empty store, as a restarted proxy-wasm VM host does.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::host::StoreError;

/// Keys the store holds at most (each plugin instance writes a handful,
/// plus two per distinct config it ever loaded); past it, new keys are
/// refused and the guard logs that its state is per config.
pub const MAX_KEYS: usize = 16_384;
/// Largest value stored.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Store {
    values: HashMap<String, (Vec<u8>, u32)>,
    /// The last version handed out (versions are never reused).
    version: u32,
}

fn store() -> &'static Mutex<Store> {
    static STORE: OnceLock<Mutex<Store>> = OnceLock::new();
    STORE.get_or_init(Mutex::default)
}

/// A value and its version.
pub fn get(key: &str) -> Option<(Vec<u8>, u32)> {
    let store = store().lock().unwrap_or_else(PoisonError::into_inner);
    store.values.get(key).cloned()
}

/// Writes `value` if the key's version is still `version` (`None`: always;
/// a version named for a key that does not exist is a race lost).
pub fn set(key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::Refused);
    }
    let mut store = store().lock().unwrap_or_else(PoisonError::into_inner);
    let current = store.values.get(key).map(|(_, v)| *v);
    match (version, current) {
        (Some(expected), Some(current)) if expected != current => return Err(StoreError::Raced),
        (Some(_), None) => return Err(StoreError::Raced),
        _ => {}
    }
    if current.is_none() && store.values.len() >= MAX_KEYS {
        return Err(StoreError::Refused);
    }
    // Version 0 is never handed out: it reads as "no version" in proxy-wasm.
    store.version = store.version.checked_add(1).unwrap_or(1);
    let next = store.version;
    store.values.insert(key.to_owned(), (value.to_vec(), next));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_naming_a_stale_version_loses_the_race() {
        let key = "test.store.cas";
        set(key, b"1", None).unwrap();
        let (value, version) = get(key).unwrap();
        assert_eq!(value, b"1");
        set(key, b"2", Some(version)).unwrap();
        assert_eq!(set(key, b"3", Some(version)), Err(StoreError::Raced));
        assert_eq!(get(key).unwrap().0, b"2");
        assert_eq!(
            set("test.store.absent", b"x", Some(version)),
            Err(StoreError::Raced)
        );
        assert_eq!(
            set(key, &vec![0; MAX_VALUE_BYTES + 1], None),
            Err(StoreError::Refused)
        );
    }
}
