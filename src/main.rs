use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = scfoundation::cli::Cli::parse();
    // An interrupted run (Ctrl-C, a workflow manager's SIGTERM) leaves no partial output behind.
    let _ = ctrlc::set_handler(|| {
        scfoundation::io::atomic::remove_pending();
        eprintln!("scfoundation: interrupted; partial output removed");
        std::process::exit(130);
    });
    if let Err(e) = scfoundation::cli::run(cli) {
        // One line: the context chain joined, as the workflows show only the last lines of stderr.
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("scfoundation: error: {msg}");
        std::process::exit(1);
    }
}
