//! The `kommunchat` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    kommunchat::cli::main()
}
