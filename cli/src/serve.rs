//! `meshguard serve-intended`: runs the reference source of truth.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use meshguard_cli::serve_intended;

/// Serve intended configs to the filters' drift checks (a reference source of truth).
///
/// `GET /v1/intended/<workload>/<filter>` answers
/// `{"config_version": ..., "fingerprint": ...}` computed from
/// `DIR/<workload>/<filter>.json`, re-read on every request: replacing that
/// file publishes a new intended version. Protocol: docs/integrity.md.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Status codes: 200 answer; 400 bad workload/filter name; 404 no such file \
                  or path; 405 not GET; 500 the file is unreadable or not a JSON object.\n\n\
                  Example:\n  meshguard serve-intended intended/ --listen 127.0.0.1:8089\n  \
                  curl http://127.0.0.1:8089/v1/intended/orders/identity"
)]
pub struct Args {
    /// Directory holding WORKLOAD/FILTER.json files.
    dir: PathBuf,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8089")]
    listen: String,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let listener = TcpListener::bind(&args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "meshguard serve-intended: listening on http://{addr}, serving {}",
        args.dir.display()
    )?;
    out.flush()?;
    drop(out);
    serve_intended::serve(listener, args.dir.clone())?;
    Ok(ExitCode::SUCCESS)
}
