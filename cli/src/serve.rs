//! `meshguard serve-intended`: runs the reference source of truth.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use meshguard_cli::serve_intended;

/// Serve signed intended-state documents to the filters' drift checks (a
/// reference source of truth).
///
/// `GET /v1/intended/<namespace>/<workload>/<filter>` answers the bytes of
/// `DIR/<namespace>/<workload>/<filter>.json` as `meshguard publish` wrote
/// them, re-read on every request. The server adds no trust: the sidecar
/// checks each document's signature, binding and expiry. Protocol:
/// docs/integrity.md.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Status codes: 200 answer; 400 bad workload/filter name; 404 no such file \
                  or path; 405 not GET; 500 the file is unreadable or over 64 KiB.\n\n\
                  Example:\n  meshguard serve-intended intended/ --listen 127.0.0.1:8089\n  \
                  curl http://127.0.0.1:8089/v1/intended/orders/orders-v1/identity"
)]
pub struct Args {
    /// Directory holding NAMESPACE/WORKLOAD/FILTER.json files (`meshguard publish --out-dir`).
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
