//! `meshguard validate`: the filter's configuration check, run ahead of deployment.

use std::io::Write;
use std::process::ExitCode;

use clap::ValueEnum;

use crate::policy_file::{mode_name, PolicyFile};

/// Check a filter configuration exactly as the filter's `on_configure` does.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when the configuration is valid (warnings included), \
                        1 when it is invalid or cannot be read."
)]
pub struct Args {
    /// Plugin configuration (the JSON of `pluginConfig`); `-` reads standard input.
    config: String,
    /// Which filter the configuration is for.
    #[arg(long, value_enum, default_value_t = Filter::Identity)]
    filter: Filter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Filter {
    /// The identity and mTLS policy filter.
    Identity,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let file = PolicyFile::read(&args.config)?;
    match args.filter {
        Filter::Identity => identity(&file),
    }
}

fn identity(file: &PolicyFile) -> anyhow::Result<ExitCode> {
    let policy = match file.identity_policy() {
        Ok(policy) => policy,
        Err(error) => {
            eprintln!("{}", file.invalid(&error));
            return Ok(ExitCode::FAILURE);
        }
    };
    let rules = policy.rule_count();
    writeln!(
        std::io::stdout().lock(),
        "{}: valid identity policy (version={}, mode={}, {rules} {})",
        file.name,
        policy.config_version().unwrap_or("unset"),
        mode_name(policy.mode()),
        if rules == 1 { "rule" } else { "rules" },
    )?;
    for warning in policy.warnings() {
        eprintln!("warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}
