//! `meshguard`: validate, explain and sign policies, and verify audit records,
//! with the filters' own engine, so that what the CLI says about a config is
//! what Envoy will do with it.

mod audit;
mod explain;
mod fingerprint;
mod keys;
mod mask;
mod output;
mod policy_file;
mod publish_cmd;
mod resources;
mod serve;
mod sign;
mod validate;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// `meshguard --version`: the crate version and the git revision it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("MESHGUARD_GIT_REV"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "meshguard",
    version = VERSION,
    about = "Validate, explain and sign meshguard filter policies, mask sample messages, and \
             verify audit records, with the filters' own engine.",
    after_help = "Exit status: 0 on success (explain: allow), 2 when `explain` decides deny or \
                  `audit` finds a broken chain or an invalid header, 3 when `mask` finds that \
                  the masking filter would refuse the message, \
                  1 on any error (invalid config, bad arguments, unreadable file)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// `text`, or `json`: one JSON value per command on standard output, with
    /// stable error codes (docs/cli.md).
    #[arg(long, global = true, value_enum, default_value_t = output::Output::Text)]
    output: output::Output,
}

#[derive(Debug, Subcommand)]
enum Command {
    Validate(validate::Args),
    Explain(explain::Args),
    Mask(mask::Args),
    Keygen(keys::Args),
    Sign(sign::Args),
    Fingerprint(fingerprint::Args),
    Publish(publish_cmd::Args),
    ServeIntended(serve::Args),
    Audit(audit::Args),
    /// Print a shell completion script: `meshguard completions bash > /etc/bash_completion.d/meshguard`.
    Completions {
        /// bash, zsh, fish, powershell or elvish.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit 1 (clap's default, 2, means "deny" for `explain`).
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let out = cli.output;
    let result = match &cli.command {
        Command::Validate(args) => validate::run(args, out),
        Command::Explain(args) => explain::run(args, out),
        Command::Mask(args) => mask::run(args, out),
        Command::Keygen(args) => keys::run(args, out),
        Command::Sign(args) => sign::run(args, out),
        Command::Fingerprint(args) => fingerprint::run(args, out),
        Command::Publish(args) => publish_cmd::run(args, out),
        Command::ServeIntended(args) => serve::run(args),
        Command::Audit(args) => audit::run(args, out),
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "meshguard",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|e| {
        let message = format!("{e:#}");
        if out.is_json() {
            // MG0001: the input or the arguments could not be used.
            let _ = output::print_json(&output::error_json("MG0001", &message));
        }
        eprintln!("meshguard: error: {message}");
        ExitCode::FAILURE
    })
}
