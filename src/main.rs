//! The `icewatch` command: parse the command line, set up logging, run the subcommand, print
//! the error chain and exit with its code (0 ok, 1 a check found a problem, 2 usage or config).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = icewatch::cli::Cli::parse();
    icewatch::cli::init_logging(cli.log_format);
    match icewatch::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("caused by: {cause}");
            }
            ExitCode::from(icewatch::cli::exit_code_for(&error))
        }
    }
}
