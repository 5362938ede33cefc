//! Keys on disk, made by `meshguard keygen`.
//!
//! - Config signing (`--for config`, the default): `ID.key` holds the base64
//!   ed25519 seed (32 bytes), `ID.pub` the base64 public key, each followed
//!   by a newline. The public key is what `MESHGUARD_TRUSTED_KEYS` lists
//!   (`ID=BASE64`).
//! - Audit (`--for audit`): with `ed25519`, `ID.key` is the private key in
//!   PKCS#8 PEM (the proxy's `MESHGUARD_AUDIT_KEY`, as OpenSSL writes it) and
//!   `ID.pub.pem` the public key in SPKI PEM (what upstreams and auditors
//!   hold); with `hmac-sha256`, `ID.key` is 32 random bytes in base64 (the
//!   secret the proxy and every verifier share).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use meshguard_core::audit::keys::{private_key_pem, public_key_pem};

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

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Purpose {
    /// Signing configurations (`meshguard sign`): ed25519.
    Config,
    /// Signing audit headers and sealing audit records (the audit section's
    /// `key_env`): ed25519 or hmac-sha256.
    Audit,
}

/// An audit key's algorithm (the audit section's `algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditAlgorithm {
    Ed25519,
    #[value(name = "hmac-sha256")]
    HmacSha256,
}

/// Create a key: an ed25519 pair for `meshguard sign`, or an audit key.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "--for config (default): writes DIR/ID.key (the private seed, base64, mode 0600) \
                  and DIR/ID.pub (the public key, base64); prints the MESHGUARD_TRUSTED_KEYS \
                  entry (ID=PUBLIC_KEY) on stdout.\n\n\
                  --for audit --algorithm ed25519 (default): writes DIR/ID.key (the private key, \
                  PKCS#8 PEM, mode 0600: the proxy's MESHGUARD_AUDIT_KEY, from a Secret) and \
                  DIR/ID.pub.pem (the public key, SPKI PEM: for upstreams and auditors); prints \
                  ID=PUBLIC_KEY (base64) on stdout.\n\n\
                  --for audit --algorithm hmac-sha256: writes DIR/ID.key (32 random bytes, \
                  base64, mode 0600), shared by the proxy and every verifier.\n\n\
                  Refuses to overwrite a file.\n\n\
                  Examples:\n  meshguard keygen --key-id release --out-dir keys\n  \
                  meshguard keygen --for audit --key-id 2024-06 --out-dir keys"
)]
pub struct Args {
    /// Name of the key: the `key_id` in signatures, MESHGUARD_TRUSTED_KEYS, or
    /// the audit section's `key_id`.
    #[arg(long, value_name = "ID")]
    key_id: String,
    /// Directory for the key files (created if missing).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// What the key is for.
    #[arg(long = "for", value_enum, default_value_t = Purpose::Config)]
    purpose: Purpose,
    /// The audit key's algorithm (with --for audit).
    #[arg(long, value_enum, default_value_t = AuditAlgorithm::Ed25519)]
    algorithm: AuditAlgorithm,
}

pub fn run(args: &Args, output: Output) -> anyhow::Result<ExitCode> {
    check_key_id(&args.key_id)?;
    if args.purpose == Purpose::Config && args.algorithm != AuditAlgorithm::Ed25519 {
        bail!("--algorithm applies to --for audit; configuration keys are ed25519");
    }
    let secret_path = args.out_dir.join(format!("{}.key", args.key_id));
    let public_name = match args.purpose {
        Purpose::Config => format!("{}.pub", args.key_id),
        Purpose::Audit => format!("{}.pub.pem", args.key_id),
    };
    let public_path = args.out_dir.join(public_name);
    for path in [&secret_path, &public_path] {
        if path.symlink_metadata().is_ok() {
            bail!("{} already exists; not overwriting a key", path.display());
        }
    }
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;

    if args.purpose == Purpose::Audit && args.algorithm == AuditAlgorithm::HmacSha256 {
        write_new(
            &secret_path,
            0o600,
            &format!("{}\n", STANDARD.encode(random_seed()?)),
        )?;
        eprintln!(
            "meshguard keygen: wrote {} (an HMAC secret, mode 0600): set it as the proxy's \
             MESHGUARD_AUDIT_KEY (from a Secret) and give it to every verifier (key id {})",
            secret_path.display(),
            args.key_id
        );
        if output.is_json() {
            print_json(&serde_json::json!({
                "key_id": args.key_id,
                "algorithm": "hmac-sha256",
                "private_key_file": secret_path.display().to_string(),
            }))?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    let key = SigningKey::from_bytes(&random_seed()?);
    let public = public_key_text(&key);
    let (secret_text, public_text) = match args.purpose {
        Purpose::Config => (
            format!("{}\n", STANDARD.encode(key.to_bytes())),
            format!("{public}\n"),
        ),
        Purpose::Audit => (private_key_pem(&key), public_key_pem(&key.verifying_key())),
    };
    write_new(&secret_path, 0o600, &secret_text)?;
    if let Err(e) = write_new(&public_path, 0o644, &public_text) {
        // Leave no half pair behind.
        let _ = std::fs::remove_file(&secret_path);
        return Err(e);
    }
    match args.purpose {
        Purpose::Config => eprintln!(
            "meshguard keygen: wrote {} (private, mode 0600) and {}; \
             trust the key with MESHGUARD_TRUSTED_KEYS={}=<public key> (printed below)",
            secret_path.display(),
            public_path.display(),
            args.key_id,
        ),
        Purpose::Audit => eprintln!(
            "meshguard keygen: wrote {} (the proxy's MESHGUARD_AUDIT_KEY, mode 0600; set \
             \"algorithm\": \"ed25519\" and \"key_id\": \"{}\") and {} (for upstreams and auditors: \
             meshguard audit verify --public-key {}={})",
            secret_path.display(),
            args.key_id,
            public_path.display(),
            args.key_id,
            public_path.display(),
        ),
    }
    if output.is_json() {
        print_json(&serde_json::json!({
            "key_id": args.key_id,
            "algorithm": "ed25519",
            "public_key": public,
            "trusted_keys_entry": (args.purpose == Purpose::Config).then(|| format!("{}={public}", args.key_id)),
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
