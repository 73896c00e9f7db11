use clap::Parser;

fn main() {
    scfoundation::cpu::tune_allocator();
    // An empty variable counts as unset (a workflow may export it empty); clap would reject it.
    for v in scfoundation::cli::ENV_OPTIONS {
        if std::env::var_os(v).is_some_and(|x| x.is_empty()) {
            std::env::remove_var(v);
        }
    }
    let cli = scfoundation::cli::Cli::parse();
    scfoundation::progress::set_mode(cli.global.progress.into());
    // Without a terminal (workflow jobs) progress and phases are info logs, so show them by default.
    let default = match scfoundation::progress::mode() {
        scfoundation::progress::ProgressMode::Log => "warn,scfoundation=info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
    // An interrupted run (Ctrl-C, a workflow manager's SIGTERM) leaves no partial output behind.
    let _ = ctrlc::set_handler(|| {
        scfoundation::fsutil::remove_pending();
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
