//! `meshguard sign`: adds a `signature` section (ed25519 over the canonical
//! config) with the core's own `sign_config`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use meshguard_core::integrity::{self, IntegrityEnv, SignatureStatus};

use crate::keys::{check_key_id, read_signing_key};
use crate::policy_file::PolicyFile;
use crate::validate::{check_default, Filter};

/// Sign a filter configuration with a `meshguard keygen` key.
///
/// The configuration must first pass validation (without any integrity
/// environment). An existing `signature` section is replaced. The fingerprint
/// does not change: it never covers the signature. A masking policy's `hash`
/// key is not needed here: it belongs to the deployment (`vmConfig.env`), not
/// to the configuration; `meshguard validate --filter masking` checks it.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when signed; 1 when the configuration is invalid, \
                  the key unreadable or the output unwritable.\n\n\
                  Example:\n  meshguard sign policy.json --key keys/release.key --key-id release \
                  --out policy.signed.json"
)]
pub struct Args {
    /// Plugin configuration (the JSON of `pluginConfig`); `-` reads standard input.
    config: String,
    /// Private key file written by `meshguard keygen` (ID.key).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The key's ID, as listed in MESHGUARD_TRUSTED_KEYS.
    #[arg(long, value_name = "ID")]
    key_id: String,
    /// Write the signed configuration here instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Which filter the configuration is for.
    #[arg(long, value_enum, default_value_t = Filter::Identity)]
    filter: Filter,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    check_key_id(&args.key_id)?;
    let file = PolicyFile::read(&args.config)?;
    if let Err(error) = check_default(&file, args.filter) {
        eprintln!("{}", file.invalid(&error));
        return Ok(ExitCode::FAILURE);
    }
    let key = read_signing_key(&args.key)?;
    let mut signed = integrity::sign_config(&file.bytes, &args.key_id, &key)
        .map_err(|e| anyhow::anyhow!("{}", file.invalid(&e)))?;
    signed.push(b'\n');

    // The filter's own check with exactly this key trusted and required.
    let env = IntegrityEnv {
        trusted_keys: vec![(args.key_id.clone(), key.verifying_key())],
        require_signature: true,
        ..IntegrityEnv::default()
    };
    let loaded = integrity::load(&signed, &env)
        .with_context(|| "the signed configuration does not verify (this is a bug)")?;
    if loaded.signature
        != (SignatureStatus::Verified {
            key_id: args.key_id.clone(),
        })
    {
        bail!("the signed configuration does not verify (this is a bug)");
    }

    match &args.out {
        Some(path) => {
            std::fs::write(path, &signed)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "meshguard sign: {} signed with key {} (fingerprint={}) -> {}",
                file.name,
                args.key_id,
                loaded.fingerprint,
                path.display()
            );
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&signed)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
