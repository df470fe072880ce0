fn main() -> std::process::ExitCode {
    mend::cli::main()
}
