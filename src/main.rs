//! The `coexist` binary: the command line is in `src/cli/`, one file per subcommand.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
