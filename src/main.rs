//! The `chat_server` binary: serves by default; `room` and `token` are
//! operator commands.

use std::process::ExitCode;
use std::time::Duration;

use chat_server::rooms::Visibility;
use chat_server::store::AdminCreated;
use chat_server::{auth, store, Config};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runtime-per-core WebSocket chat server with PostgreSQL history.
#[derive(Parser)]
#[command(name = "chat_server", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve WebSockets (the default when no command is given).
    ///
    /// Every flag can also be set by the environment variable shown with it.
    /// Other commands: `chat_server room create NAME [--private] [--owner USER_ID]`,
    /// `chat_server room list`,
    /// `chat_server token --user-id N --username NAME [--ttl 1h]`,
    /// `chat_server migrate`.
    Serve(Box<Config>),
    /// Manage rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Print a token signed with JWT_SECRET, for trying the server out.
    Token {
        /// User id (the `user_id` and `sub` claims): 1 to 2^53 - 1.
        #[arg(long)]
        user_id: i64,
        /// Username claim.
        #[arg(long)]
        username: String,
        /// Lifetime, e.g. `30m`, `1h`, `12h`; at most the server's maximum.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The server's maximum token lifetime (seconds): a longer --ttl is refused.
        #[arg(long, env = "CHAT_MAX_TOKEN_LIFETIME_SECS", default_value_t = 86_400)]
        max_token_lifetime_secs: u64,
        /// Shared secret.
        #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
        jwt_secret: String,
        /// Key id put in the token's `kid` header.
        #[arg(long, env = "JWT_SECRET_KID")]
        jwt_secret_kid: Option<String>,
        /// `iss` claim.
        #[arg(long, env = "CHAT_JWT_ISSUER")]
        jwt_issuer: Option<String>,
        /// `aud` claim.
        #[arg(long, env = "CHAT_JWT_AUDIENCE")]
        jwt_audience: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate {
        /// PostgreSQL connection string.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

#[derive(Subcommand)]
enum RoomCommand {
    /// Create a room (a no-op, with a note, when it exists).
    Create {
        /// Room name: 1 to 64 bytes, no control characters.
        name: String,
        /// Private: only invited users may join; to others it does not exist.
        #[arg(long)]
        private: bool,
        /// The room's owner (a user id that has connected once).
        #[arg(long)]
        owner: Option<i64>,
        /// PostgreSQL connection string.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// List rooms with member and message counts.
    List {
        /// PostgreSQL connection string.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn,refinery_core=warn")),
        )
        .with_target(true)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse_from(with_default_command(std::env::args_os().collect()));
    let result = match cli.command {
        Command::Serve(config) => serve(*config),
        Command::Token {
            user_id,
            username,
            ttl,
            max_token_lifetime_secs,
            jwt_secret,
            jwt_secret_kid,
            jwt_issuer,
            jwt_audience,
        } => {
            if !chat_server::protocol::valid_user_id(user_id) {
                Err("invalid --user-id: use 1 to 9007199254740991".into())
            } else if let Err(e) = auth::check_username(&username) {
                Err(e.to_string().into())
            } else if ttl.as_secs() > max_token_lifetime_secs {
                Err(format!(
                    "--ttl exceeds the maximum token lifetime of {max_token_lifetime_secs} s \
                     (CHAT_MAX_TOKEN_LIFETIME_SECS)"
                )
                .into())
            } else {
                let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
                let options = auth::SignOptions {
                    kid: jwt_secret_kid,
                    issuer: jwt_issuer,
                    audience: jwt_audience,
                };
                println!(
                    "{}",
                    auth::sign_hs256_with(jwt_secret.as_bytes(), &options, user_id, &username, ttl)
                );
                Ok(())
            }
        }
        Command::Migrate { database_url } => admin(&database_url, |_| async { Ok(()) }),
        Command::Room(RoomCommand::Create {
            name,
            private,
            owner,
            database_url,
        }) => {
            let visibility = if private {
                Visibility::Private
            } else {
                Visibility::Public
            };
            if !chat_server::protocol::valid_new_room_name(&name) {
                Err("invalid room name: use 1 to 64 ASCII letters, digits, '-', '_' or '.'".into())
            } else if owner.is_some_and(|o| !chat_server::protocol::valid_user_id(o)) {
                Err("invalid --owner: use a user id from 1 to 9007199254740991".into())
            } else {
                admin(&database_url, |client| async move {
                    match store::create_room_as(&client, &name, visibility, owner).await? {
                        AdminCreated::Created => {
                            println!("created {} room '{name}'", visibility.as_str())
                        }
                        AdminCreated::Exists => println!("room '{name}' already exists"),
                        AdminCreated::NoSuchOwner => {
                            return Err(store::StoreError::NoSuchUser(owner.unwrap_or(0)))
                        }
                    }
                    Ok(())
                })
            }
        }
        Command::Room(RoomCommand::List { database_url }) => {
            admin(&database_url, |client| async move {
                println!("{:<32} {:>8} {:>10}", "room", "members", "messages");
                for (name, members, messages) in store::list_rooms(&client).await? {
                    println!("{name:<32} {members:>8} {messages:>10}");
                }
                Ok(())
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat_server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `chat_server [FLAGS]` means `chat_server serve [FLAGS]`, so that
/// `chat_server --help` documents every server flag.
fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).map(str::to_owned);
    let is_command = matches!(
        first.as_deref(),
        Some("serve" | "room" | "token" | "migrate" | "help" | "-V" | "--version")
    );
    if !is_command {
        args.insert(1.min(args.len()), "serve".into());
    }
    args
}

type BoxError = Box<dyn std::error::Error>;

fn serve(mut config: Config) -> Result<(), BoxError> {
    use tokio::signal::unix::{signal, SignalKind};
    config.read_secret_env();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Caught from now on: a SIGHUP during start-up must not kill the process
    // (it is applied once the server runs).
    let mut hup = {
        let _context = rt.enter();
        signal(SignalKind::hangup())?
    };
    let server = chat_server::start(config)?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("SIGINT: shutting down");
                    break;
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM: shutting down");
                    break;
                }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading keys and certificate");
                    // A failed reload is logged and keeps the previous keys
                    // and certificate; the server carries on either way.
                    let _ = server.reload();
                }
            }
        }
        Ok::<_, std::io::Error>(())
    })?;
    server.shutdown();
    Ok(())
}

/// Connects, migrates, and runs one admin action.
fn admin<F, Fut>(database_url: &str, action: F) -> Result<(), BoxError>
where
    F: FnOnce(tokio_postgres::Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), store::StoreError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut client = store::connect(database_url).await?;
        store::migrate(&mut client).await?;
        action(client).await
    })?;
    Ok(())
}
