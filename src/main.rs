//! The `improve` binary: parse arguments, call into the library, and map every way of ending to
//! the contract's exit codes with one line on stderr. No panic or backtrace for a user mistake.

use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use improve::cli::{Cli, Command};
use improve::error::{UsageError, UserError};
use improve::progress::Printer;
use improve::settings::CommandLine;

fn main() -> ExitCode {
    let (cli, matches) = match parse() {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    improve::logging::init(cli.global.verbose, cli.global.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli, matches)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The command line, and clap's matches (they tell a flag from an environment variable).
fn parse() -> Result<(Cli, ArgMatches), ExitCode> {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    match parsed {
        Ok(parsed) => Ok(parsed),
        // Help and version go out whole; a usage mistake is one line that says where to look.
        Err(e) if e.use_stderr() => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("error: bad usage");
            // A value clap does not know: the ones it does, on the same line.
            let known = text
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("[possible values:"))
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            eprintln!("{first}{known} (see --help)");
            Err(ExitCode::from(2))
        }
        Err(e) => {
            let _ = e.print();
            Err(ExitCode::from(0))
        }
    }
}

async fn run(cli: Cli, matches: ArgMatches) -> anyhow::Result<u8> {
    let printer = Printer::new(cli.global.quiet, cli.global.verbose);
    match &cli.command {
        None => Ok(improve::run::run(&cli.global, &cli.run, printer)
            .await?
            .exit_code()),
        Some(Command::Demo(args)) => Ok(improve::demo::run(&cli.global, args, printer)
            .await?
            .exit_code()),
        Some(Command::Status {
            json,
            settings: true,
            run,
        }) => {
            // The options after `status` first, then those before it.
            let lines = [
                CommandLine {
                    args: run,
                    matches: matches.subcommand_matches("status"),
                },
                CommandLine {
                    args: &cli.run,
                    matches: Some(&matches),
                },
            ];
            improve::views::status_settings(&cli.global, &lines, *json).map(|_| 0)
        }
        Some(command @ (Command::Plan { .. } | Command::Work { .. } | Command::Gather { .. })) => {
            shard_command(&cli.global, command, &matches, printer).await
        }
        Some(Command::Status { json, .. }) => improve::views::status(&cli.global, *json).map(|_| 0),
        Some(Command::Log { json }) => improve::views::log(&cli.global, *json).map(|_| 0),
        Some(Command::Show { n, json }) => improve::show::show(&cli.global, *n, *json).map(|_| 0),
        Some(Command::Report { out, format }) => {
            improve::views::report(&cli.global, out.as_deref(), *format).map(|_| 0)
        }
    }
}

/// `plan`, `work` and `gather`: one run over many machines.
async fn shard_command(
    global: &improve::cli::GlobalArgs,
    command: &Command,
    matches: &ArgMatches,
    printer: Printer,
) -> anyhow::Result<u8> {
    match command {
        Command::Plan {
            shards,
            out,
            matrix,
            run,
        } => {
            let request = improve::shard::plan::PlanRequest {
                shards: *shards,
                out: out.clone(),
                matrix: *matrix,
            };
            let line = CommandLine {
                args: run,
                matches: matches.subcommand_matches("plan"),
            };
            improve::shard::plan::plan(global, &request, line, printer)
                .await
                .map(|_| 0)
        }
        Command::Work {
            plan,
            shard,
            push,
            take_over,
            run,
        } => {
            let request = improve::shard::work::WorkRequest {
                plan: plan.clone(),
                shard: *shard,
                push: push.clone(),
                take_over: *take_over,
            };
            let line = CommandLine {
                args: run,
                matches: matches.subcommand_matches("work"),
            };
            Ok(improve::shard::work::work(global, &request, line, printer)
                .await?
                .exit_code())
        }
        Command::Gather {
            plan,
            from,
            push,
            run,
        } => {
            let request = improve::shard::gather::GatherRequest {
                plan: plan.clone(),
                from: from.clone(),
                push: push.clone(),
            };
            let line = CommandLine {
                args: run,
                matches: matches.subcommand_matches("gather"),
            };
            Ok(
                improve::shard::gather::gather(global, &request, line, printer)
                    .await?
                    .exit_code(),
            )
        }
        _ => Ok(2),
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

/// The error and its causes on one line; a user error is already a full sentence.
fn one_line(e: &anyhow::Error) -> String {
    if e.downcast_ref::<UserError>().is_some() || e.downcast_ref::<UsageError>().is_some() {
        return e.to_string();
    }
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}
