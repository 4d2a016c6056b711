//! The `drover` binary: parses arguments, sets up logging and hands the command to the library
//! (`drover::cli::run`), which picks the exit code: 0 success, 1 the operation ran but did not
//! succeed, 2 bad usage or bad configuration.

use clap::Parser;
use drover::cli::{self, args::Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    drover::io::logging::init();
    match cli::run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("drover: {:#}", failure.error());
            ExitCode::from(failure.exit_code())
        }
    }
}
