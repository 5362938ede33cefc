//! The integrity envelope of every filter config: signature checks, the
//! integrity section, source-of-truth answers. The first byte picks the
//! environment (unsigned allowed, or a signature required from a known key).
//! A config signed with the trusted key must load with a valid signature, and
//! its admission holds the release rules at any host time: the config the
//! proxy already runs is admitted again, an older serial never is, and a
//! first load outside the validity window never is.
#![no_main]
use std::sync::OnceLock;

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use meshguard_core::integrity::{
    admit, load, read_answer, sign_release, Admission, AnswerContext, IntegrityEnv, Release,
    SignatureStatus,
};

fn key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::from_bytes(&[7u8; 32]))
}

fn env(require_signature: bool) -> IntegrityEnv {
    let public = base64::engine::general_purpose::STANDARD.encode(key().verifying_key().as_bytes());
    let keys = format!("fuzz={public}");
    let required = if require_signature { "true" } else { "false" };
    IntegrityEnv::from_vars(|name| match name {
        "MESHGUARD_TRUSTED_KEYS" => Some(keys.clone()),
        "MESHGUARD_REQUIRE_SIGNATURE" => Some(required.to_string()),
        _ => None,
    })
    .expect("the fuzz environment is valid")
}

fuzz_target!(|data: &[u8]| {
    let (sel, rest) = meshguard_fuzz::selector(data);
    match sel % 3 {
        0 => {
            let _ = load(rest, &env(false));
        }
        1 => {
            let _ = load(rest, &env(true));
            // A config that loads unsigned loads signed (with its release scope)
            // by the trusted key too, and verified.
            let Ok(unsigned) = load(rest, &env(false)) else {
                return;
            };
            if unsigned.signature != SignatureStatus::Unsigned {
                return; // it carried a signature of its own
            }
            // Signed configs name their scope (filter, workloads, serial).
            // The window and the host time come from the selector and the
            // length: enough to land before, inside and after the window.
            let release = Release {
                filter: "identity".into(),
                workloads: vec!["default/backend".into()],
                serial: u64::from(sel >> 6),
                not_before: (sel & 8 != 0).then_some(100),
                not_after: (sel & 16 != 0).then_some(200),
                services: None,
            };
            let now_s = if sel & 32 != 0 {
                u64::MAX
            } else {
                u64::try_from(rest.len())
                    .unwrap_or(u64::MAX)
                    .saturating_mul(7)
            };
            let Ok(signed) = sign_release(rest, &release, "fuzz", key()) else {
                return; // e.g. it already names a release of its own
            };
            let loaded = load(&signed, &env(true)).expect("a signed loadable config loads");
            assert_eq!(
                loaded.signature,
                SignatureStatus::Verified {
                    key_id: "fuzz".into()
                }
            );
            // The fingerprint covers the release too (only the signature is
            // left out), so it differs from the unsigned config's.
            let env = env(true);
            let first = Admission {
                filter: "identity",
                workload: Some("default/backend"),
                now_s,
                newest: None,
                admitted_here: false,
            };
            let in_window = release.not_before.is_none_or(|nb| now_s >= nb)
                && release.not_after.is_none_or(|na| now_s <= na);
            assert_eq!(admit(&loaded, &env, &first).is_ok(), in_window);
            // A VM created later (a worker, a recreated VM) loads the config
            // this proxy admitted, whatever the time and newer serials now:
            // a check never disappears on one VM.
            for newest in [release.serial, release.serial.saturating_add(1)] {
                let later_vm = Admission {
                    newest: Some((newest, &loaded.fingerprint)),
                    admitted_here: true,
                    ..first
                };
                admit(&loaded, &env, &later_vm).expect("the config the proxy runs loads again");
            }
            let rolled_back = Admission {
                newest: Some((release.serial.saturating_add(1), &loaded.fingerprint)),
                ..first
            };
            let refusal = admit(&loaded, &env, &rolled_back).expect_err("an older serial");
            assert!(
                matches!(
                    refusal.result_label(),
                    "rollback" | "expired" | "not_yet_valid"
                ),
                "{refusal}"
            );
        }
        _ => {
            // A source-of-truth answer: read, never believed unless signed.
            let at = AnswerContext {
                filter: "identity",
                workload: Some("default/backend"),
                now_s: 0,
                newest_issued: None,
            };
            let _ = read_answer(rest, &env(true), &at);
        }
    }
});
