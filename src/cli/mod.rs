//! Command line: `corestream serve` and the client commands (`topic`,
//! `produce`, `consume`, `group`, `txn`) that work against any Kafka-compatible broker.

pub mod bench;
pub mod client;
pub mod group;
pub mod raw;
pub mod serve;
pub mod tune;
pub mod txn;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "corestream", version, about = "A Kafka-compatible event streaming broker: thread-per-core on io_uring")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the broker in the foreground (SIGINT/SIGTERM shut it down cleanly).
    Serve(serve::ServeArgs),
    /// Create, list, describe, delete topics and alter their configs.
    #[command(subcommand)]
    Topic(client::TopicCommand),
    /// Produce lines from stdin (`key<TAB>value` or just `value`).
    Produce(client::ProduceArgs),
    /// Consume records and print them, one per line.
    Consume(client::ConsumeArgs),
    /// List, describe and delete consumer groups; reset their committed offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// List and describe transactions; show a topic's active producers.
    #[command(subcommand)]
    Txn(txn::TxnCommand),
    /// Load generator: `bench run` one workload, `bench compare` brokers side by side.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Check, and with --apply set, the host settings a bare-metal broker wants.
    Tune(tune::TuneArgs),
}

/// Entry point: parses arguments, runs the command, prints errors as one line.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Topic(cmd) => client::topic(cmd),
        Command::Produce(args) => client::produce(args),
        Command::Consume(args) => client::consume(args),
        Command::Group(cmd) => group::run(cmd),
        Command::Txn(cmd) => txn::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Tune(args) => tune::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
