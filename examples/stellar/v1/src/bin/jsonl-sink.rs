//! `jsonl-sink`: see `stellar_v1_components::jsonl_sink`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    stellar_v1_components::jsonl_sink::main(&args)
}
