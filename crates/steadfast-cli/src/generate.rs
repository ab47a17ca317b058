//! `steadfast completions SHELL` and `steadfast man`: a shell completion script and the man
//! pages, generated from the clap definitions, so they never drift from the flags.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::exit;

const COMPLETIONS_HELP: &str = "\
Install (one command each; open a new shell afterwards):
  bash:  steadfast completions bash > ~/.local/share/bash-completion/completions/steadfast
  zsh:   steadfast completions zsh > \"${fpath[1]}/_steadfast\"
  fish:  steadfast completions fish > ~/.config/fish/completions/steadfast.fish";

const MAN_HELP: &str = "\
Install:
  steadfast man > ~/.local/share/man/man1/steadfast.1           # the main page
  steadfast man --dir ~/.local/share/man/man1                    # with one page per subcommand
then `man steadfast` (or `man steadfast-sub`).";

/// Arguments of `steadfast completions`.
#[derive(Args, Debug)]
#[command(after_help = COMPLETIONS_HELP)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum, value_name = "SHELL")]
    shell: Shell,
}

/// Arguments of `steadfast man`.
#[derive(Args, Debug)]
#[command(after_help = MAN_HELP)]
pub struct ManArgs {
    /// Write steadfast.1 and one page per subcommand (steadfast-pub.1, ...) into DIR instead of
    /// printing steadfast.1 to stdout.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The command tree, named as installed.
fn command() -> clap::Command {
    crate::Cli::command()
        .name("steadfast")
        .bin_name("steadfast")
}

/// Prints the completion script.
pub fn completions(args: CompletionsArgs) -> ExitCode {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command(), "steadfast", &mut out);
    write_stdout(&out)
}

/// Prints `steadfast.1`, or writes every page into `--dir`.
pub fn man(args: ManArgs) -> ExitCode {
    let cmd = command();
    match args.dir {
        Some(dir) => {
            match std::fs::create_dir_all(&dir).and_then(|_| clap_mangen::generate_to(cmd, &dir)) {
                Ok(()) => ExitCode::from(exit::OK),
                Err(e) => {
                    eprintln!(
                        "steadfast: cannot write the man pages to {}: {e}",
                        dir.display()
                    );
                    ExitCode::from(exit::RUNTIME)
                }
            }
        }
        None => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(cmd).render(&mut out) {
                Ok(()) => write_stdout(&out),
                Err(e) => {
                    eprintln!("steadfast: cannot render the man page: {e}");
                    ExitCode::from(exit::RUNTIME)
                }
            }
        }
    }
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|_| stdout.flush()) {
        Ok(()) => ExitCode::from(exit::OK),
        // A closed pipe (`| head`): nothing more to say.
        Err(_) => ExitCode::from(exit::RUNTIME),
    }
}
