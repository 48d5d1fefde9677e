fn main() -> std::process::ExitCode {
    ferrio::cli::main()
}
