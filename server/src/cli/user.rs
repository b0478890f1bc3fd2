//! `strata user …`: manage the accounts of a secure server (through the KurrentDB `Users`
//! service, which takes `$admins`; a user may show themselves and change their own password).

use clap::Subcommand;
use serde_json::json;
use strata_kurrentdb_proto::event_store::client::users::{self as ku, users_client::UsersClient};
use tonic::Code;

use super::{connect, ClientOpts, Failure, EXIT_DENIED, EXIT_EXISTS, EXIT_INVALID, EXIT_NOT_FOUND};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List every user.
    List {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Show one user.
    Show {
        login: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Create a user.
    Create {
        login: String,
        /// The new user's password.
        #[arg(long, env = "STRATA_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
        #[arg(long, default_value = "")]
        full_name: String,
        /// A group (repeat for several), e.g. $admins, $ops, or your own.
        #[arg(long = "group")]
        groups: Vec<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Replace a user's full name and groups (and password, with --new-password).
    Update {
        login: String,
        #[arg(long, default_value = "")]
        full_name: String,
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long, env = "STRATA_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Delete a user.
    Delete {
        login: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Disable a user: their credentials stop working at once.
    Disable {
        login: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Enable a disabled user.
    Enable {
        login: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Set a user's password (admins).
    ResetPassword {
        login: String,
        #[arg(long, env = "STRATA_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Change your own password, giving the current one (--password).
    ChangePassword {
        #[arg(long, env = "STRATA_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

fn exit_for(status: &tonic::Status) -> i32 {
    match status.code() {
        Code::NotFound => EXIT_NOT_FOUND,
        Code::AlreadyExists => EXIT_EXISTS,
        Code::PermissionDenied | Code::Unauthenticated => EXIT_DENIED,
        Code::InvalidArgument => EXIT_INVALID,
        Code::Unavailable => super::EXIT_UNAVAILABLE,
        _ => 1,
    }
}

fn print_details(d: &ku::details_resp::UserDetails, as_json: bool) {
    let updated = d
        .last_updated
        .as_ref()
        .map_or(0, |t| t.ticks_since_epoch / 10_000_000);
    if as_json {
        println!(
            "{}",
            json!({"login": d.login_name, "full_name": d.full_name, "groups": d.groups,
                   "disabled": d.disabled, "last_updated_unix": updated})
        );
    } else {
        println!(
            "{}\t{}\tgroups={}\t{}",
            d.login_name,
            d.full_name,
            d.groups.join(","),
            if d.disabled { "disabled" } else { "enabled" }
        );
    }
}

pub async fn execute(cmd: UserCommand) -> Result<i32, Failure> {
    let opts = match &cmd {
        UserCommand::List { opts }
        | UserCommand::Show { opts, .. }
        | UserCommand::Create { opts, .. }
        | UserCommand::Update { opts, .. }
        | UserCommand::Delete { opts, .. }
        | UserCommand::Disable { opts, .. }
        | UserCommand::Enable { opts, .. }
        | UserCommand::ResetPassword { opts, .. }
        | UserCommand::ChangePassword { opts, .. } => opts.clone(),
    };
    let mut users = UsersClient::new(connect(&opts).await?.transport());
    let done = |what: String| {
        if opts.json {
            println!("{}", json!({ "done": what }));
        } else {
            println!("{what}");
        }
    };
    let result: Result<(), tonic::Status> = async {
        match cmd {
            UserCommand::List { .. } | UserCommand::Show { .. } => {
                let login = match &cmd {
                    UserCommand::Show { login, .. } => login.clone(),
                    _ => String::new(),
                };
                let mut s = users
                    .details(ku::DetailsReq {
                        options: Some(ku::details_req::Options { login_name: login }),
                    })
                    .await?
                    .into_inner();
                while let Some(d) = s.message().await? {
                    if let Some(d) = d.user_details {
                        print_details(&d, opts.json);
                    }
                }
            }
            UserCommand::Create {
                login,
                new_password,
                full_name,
                groups,
                ..
            } => {
                users
                    .create(ku::CreateReq {
                        options: Some(ku::create_req::Options {
                            login_name: login.clone(),
                            password: new_password,
                            full_name,
                            groups,
                        }),
                    })
                    .await?;
                done(format!("created user {login}"));
            }
            UserCommand::Update {
                login,
                full_name,
                groups,
                new_password,
                ..
            } => {
                users
                    .update(ku::UpdateReq {
                        options: Some(ku::update_req::Options {
                            login_name: login.clone(),
                            password: new_password.unwrap_or_default(),
                            full_name,
                            groups,
                        }),
                    })
                    .await?;
                done(format!("updated user {login}"));
            }
            UserCommand::Delete { login, .. } => {
                users
                    .delete(ku::DeleteReq {
                        options: Some(ku::delete_req::Options {
                            login_name: login.clone(),
                        }),
                    })
                    .await?;
                done(format!("deleted user {login}"));
            }
            UserCommand::Disable { login, .. } => {
                users
                    .disable(ku::DisableReq {
                        options: Some(ku::disable_req::Options {
                            login_name: login.clone(),
                        }),
                    })
                    .await?;
                done(format!("disabled user {login}"));
            }
            UserCommand::Enable { login, .. } => {
                users
                    .enable(ku::EnableReq {
                        options: Some(ku::enable_req::Options {
                            login_name: login.clone(),
                        }),
                    })
                    .await?;
                done(format!("enabled user {login}"));
            }
            UserCommand::ResetPassword {
                login,
                new_password,
                ..
            } => {
                users
                    .reset_password(ku::ResetPasswordReq {
                        options: Some(ku::reset_password_req::Options {
                            login_name: login.clone(),
                            new_password,
                        }),
                    })
                    .await?;
                done(format!("set the password of {login}"));
            }
            UserCommand::ChangePassword { new_password, .. } => {
                let login = opts.user.clone().unwrap_or_default();
                users
                    .change_password(ku::ChangePasswordReq {
                        options: Some(ku::change_password_req::Options {
                            login_name: login.clone(),
                            current_password: opts.password.clone().unwrap_or_default(),
                            new_password,
                        }),
                    })
                    .await?;
                done(format!("changed the password of {login}"));
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(0),
        Err(status) => {
            eprintln!("strata: {}", status.message());
            Ok(exit_for(&status))
        }
    }
}
