//! The proxy-level trust settings (`MESHGUARD_*`, docs/integrity.md): one
//! fuzz input is the value of every variable, one per line. Properties: never
//! panics; an accepted environment reads back deterministically, its trusted
//! key ids are distinct ignoring case (one key per id), and a revoked id is
//! reported revoked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::integrity::{IntegrityEnv, ALL_ENV};

fuzz_target!(|data: &[u8]| {
    let values = meshguard_fuzz::fields::<{ ALL_ENV.len() }>(data);
    let var = |name: &str| {
        let i = ALL_ENV.iter().position(|n| *n == name)?;
        let value = values.get(i)?;
        (!value.is_empty()).then(|| value.clone())
    };
    let Ok(env) = IntegrityEnv::from_vars(var) else {
        return;
    };
    let again = IntegrityEnv::from_vars(var).expect("the same environment loads twice");
    assert_eq!(format!("{env:?}"), format!("{again:?}"));
    for (i, (id, _)) in env.trusted_keys.iter().enumerate() {
        for (other, _) in env.trusted_keys.iter().skip(i + 1) {
            assert!(!id.eq_ignore_ascii_case(other), "two keys for {id:?}");
        }
    }
    for id in &env.revoked_keys {
        assert!(env.is_revoked(id), "{id:?} listed but not revoked");
    }
});
