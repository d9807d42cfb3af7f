// mimalloc rather than the system allocator: a request makes a few dozen small,
// short-lived allocations on whichever worker thread runs it, which is the case
// mimalloc's thread-local free lists are built for (see bench/PROFILE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sessiond::cli::main()
}
