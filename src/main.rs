//! The `simgan` binary: all work is in the library (`simgan::cli`).

fn main() -> std::process::ExitCode {
    simgan::cli::main()
}
