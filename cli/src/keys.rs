//! Signing keys on disk: `ID.key` holds the base64 ed25519 seed (32 bytes),
//! `ID.pub` the base64 public key, each followed by a newline. The public key
//! is what `MESHGUARD_TRUSTED_KEYS` lists (`ID=BASE64`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;

use crate::output::{print_json, Output};

/// A key ID goes into `MESHGUARD_TRUSTED_KEYS` (`ID=KEY,ID=KEY`) and into file
/// names, so it is kept to a safe alphabet.
pub fn check_key_id(id: &str) -> anyhow::Result<()> {
    let safe = !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !safe {
        bail!("key ID {id:?} must match [A-Za-z0-9_-][A-Za-z0-9._-]* (it names files and goes into MESHGUARD_TRUSTED_KEYS)");
    }
    Ok(())
}

/// 32 bytes from the kernel's CSPRNG.
fn random_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("cannot read /dev/urandom")?;
    Ok(seed)
}

/// Reads a `meshguard keygen` private key file.
pub fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    let seed = STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .with_context(|| {
            format!(
                "{} is not a meshguard private key (base64 of a 32-byte ed25519 seed)",
                path.display()
            )
        })?;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: {} is readable by other users (mode {:o}); `chmod 600` it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    Ok(SigningKey::from_bytes(&seed))
}

/// Base64 of the public key, as `MESHGUARD_TRUSTED_KEYS` expects it.
pub fn public_key_text(key: &SigningKey) -> String {
    STANDARD.encode(key.verifying_key().to_bytes())
}

/// Create an ed25519 signing key pair for `meshguard sign`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Writes DIR/ID.key (the private seed, base64, mode 0600) and DIR/ID.pub \
                  (the public key, base64); refuses to overwrite either. Prints the \
                  MESHGUARD_TRUSTED_KEYS entry (ID=PUBLIC_KEY) on stdout.\n\n\
                  Example:\n  meshguard keygen --key-id release --out-dir keys"
)]
pub struct Args {
    /// Name of the key: the `key_id` in signatures and in MESHGUARD_TRUSTED_KEYS.
    #[arg(long, value_name = "ID")]
    key_id: String,
    /// Directory for ID.key and ID.pub (created if missing).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

pub fn run(args: &Args, output: Output) -> anyhow::Result<ExitCode> {
    check_key_id(&args.key_id)?;
    let secret_path = args.out_dir.join(format!("{}.key", args.key_id));
    let public_path = args.out_dir.join(format!("{}.pub", args.key_id));
    for path in [&secret_path, &public_path] {
        if path.symlink_metadata().is_ok() {
            bail!("{} already exists; not overwriting a key", path.display());
        }
    }
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;

    let key = SigningKey::from_bytes(&random_seed()?);
    let public = public_key_text(&key);
    write_new(
        &secret_path,
        0o600,
        &format!("{}\n", STANDARD.encode(key.to_bytes())),
    )?;
    if let Err(e) = write_new(&public_path, 0o644, &format!("{public}\n")) {
        // Leave no half pair behind.
        let _ = std::fs::remove_file(&secret_path);
        return Err(e);
    }
    eprintln!(
        "meshguard keygen: wrote {} (private, mode 0600) and {}; \
         trust the key with MESHGUARD_TRUSTED_KEYS={}=<public key> (printed below)",
        secret_path.display(),
        public_path.display(),
        args.key_id,
    );
    if output.is_json() {
        print_json(&serde_json::json!({
            "key_id": args.key_id,
            "public_key": public,
            "trusted_keys_entry": format!("{}={public}", args.key_id),
            "private_key_file": secret_path.display().to_string(),
            "public_key_file": public_path.display().to_string(),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}={public}", args.key_id)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` (never replacing a file) with `mode` and writes `text`.
fn write_new(path: &Path, mode: u32, text: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
