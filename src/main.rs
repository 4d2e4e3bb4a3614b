fn main() -> std::process::ExitCode {
    corestream::cli::main()
}
