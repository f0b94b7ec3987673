//! `kernel-config` CLI: `check`, `modules`, `merge`, `show`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use kernel_config::{
    check, needed_modules, Config, Fragment, Status, DEFAULT_FRAGMENTS, FRAGMENTS,
};

/// Guest kernel config fragments for Cocoon, and a checker for a kernel .config.
#[derive(Parser)]
#[command(name = "kernel-config", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Select {
    /// The kernel .config to read.
    #[arg(long, short)]
    config: PathBuf,
    /// Fragment to check against: base, confidential, debug, or a file path
    /// (repeatable; default: base and confidential).
    #[arg(long = "fragment", short = 'f', value_name = "NAME|FILE")]
    fragments: Vec<String>,
}

impl Select {
    fn load(&self) -> Result<(Config, Vec<Fragment>)> {
        let text = std::fs::read_to_string(&self.config)
            .with_context(|| format!("reading {}", self.config.display()))?;
        Ok((Config::parse(&text), load_fragments(&self.fragments)?))
    }
}

fn load_fragments(names: &[String]) -> Result<Vec<Fragment>> {
    let names: Vec<String> = if names.is_empty() {
        DEFAULT_FRAGMENTS.iter().map(|s| s.to_string()).collect()
    } else {
        names.to_vec()
    };
    names
        .iter()
        .map(|n| Fragment::load(n).map_err(Into::into))
        .collect()
}

#[derive(Subcommand)]
enum Cmd {
    /// List what the config lacks or gets wrong against the fragments (exit 1 if any).
    /// `y` vs `m` matters: a module where built-in is needed is wrong; a module where a
    /// module is fine is listed as MODULE (the initrd must ship it).
    Check {
        #[command(flatten)]
        select: Select,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
        /// Also print the lines that are fine.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Print the modules the initrd must ship for this config, one per line (feed them
    /// to `rootfs-builder initrd --module NAME`).
    Modules {
        #[command(flatten)]
        select: Select,
    },
    /// Apply fragments to a base config textually (like merge_config.sh -m); run
    /// `make olddefconfig` in the kernel tree afterwards to resolve dependencies.
    Merge {
        /// The base .config.
        #[arg(long)]
        base: PathBuf,
        #[arg(long = "fragment", short = 'f', value_name = "NAME|FILE")]
        fragments: Vec<String>,
        /// Where to write the merged config.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Print a built-in fragment (base, confidential, debug), e.g. to feed merge_config.sh.
    Show {
        /// Fragment name.
        name: String,
    },
}

fn label(s: Status) -> &'static str {
    match s {
        Status::Ok => "OK",
        Status::Module => "MODULE",
        Status::NotSet => "MISSING",
        Status::Absent => "ABSENT",
        Status::ModuleNotBuiltin => "WRONG",
        Status::MustBeOff => "WRONG",
        Status::WrongValue => "WRONG",
    }
}

fn explain(s: Status) -> &'static str {
    match s {
        Status::Ok => "",
        Status::Module => "built as a module: ship it in the initrd",
        Status::NotSet => "not set",
        Status::Absent => "not in this config (unknown to this kernel, or dependencies unmet)",
        Status::ModuleNotBuiltin => "a module, but must be built in",
        Status::MustBeOff => "must be off",
        Status::WrongValue => "different value",
    }
}

fn run(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::Check {
            select,
            json,
            verbose,
        } => {
            let (config, frags) = select.load()?;
            let findings = check(&config, &frags);
            let problems = findings.iter().filter(|f| f.status.is_problem()).count();
            if json {
                let doc = serde_json::json!({
                    "config": select.config,
                    "problems": problems,
                    "modules": needed_modules(&findings),
                    "findings": findings,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                for f in &findings {
                    if f.status == Status::Ok && !verbose {
                        continue;
                    }
                    let have = f
                        .have
                        .as_ref()
                        .map_or("absent".to_string(), |v| v.to_string());
                    let module = f
                        .module
                        .as_ref()
                        .map(|m| format!(" [module {m}]"))
                        .unwrap_or_default();
                    println!(
                        "{:<7} {:<48} want {:<3} have {:<7} ({}: {}){}",
                        label(f.status),
                        f.symbol,
                        f.want.to_string(),
                        have,
                        f.fragment,
                        explain(f.status),
                        module
                    );
                }
                println!(
                    "{} checked, {} problems, {} modules to ship",
                    findings.len(),
                    problems,
                    needed_modules(&findings).len()
                );
            }
            Ok(problems == 0)
        }
        Cmd::Modules { select } => {
            let (config, frags) = select.load()?;
            for m in needed_modules(&check(&config, &frags)) {
                println!("{m}");
            }
            Ok(true)
        }
        Cmd::Merge {
            base,
            fragments,
            output,
        } => {
            let text = std::fs::read_to_string(&base)
                .with_context(|| format!("reading {}", base.display()))?;
            let mut config = Config::parse(&text);
            for f in load_fragments(&fragments)? {
                config.apply(&f);
            }
            std::fs::write(&output, config.render())
                .with_context(|| format!("writing {}", output.display()))?;
            Ok(true)
        }
        Cmd::Show { name } => {
            let text = FRAGMENTS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| *t)
                .with_context(|| format!("no built-in fragment {name:?}"))?;
            print!("{text}");
            Ok(true)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("kernel-config: {e:#}");
            ExitCode::from(2)
        }
    }
}
