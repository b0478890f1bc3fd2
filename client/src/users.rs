//! Managing the users of a secure server (admins; a user may get their own account and change
//! their own password).
//!
//! ```no_run
//! # async fn demo(client: strata_client::Client) -> strata_client::Result<()> {
//! client.create_user("alice", "s3cret", "Alice", &["readers"]).await?;
//! client.set_user_enabled("alice", false).await?;
//! for user in client.list_users().await? {
//!     println!("{} {:?} disabled={}", user.login, user.groups, user.disabled);
//! }
//! # Ok(()) }
//! ```

use strata_proto::v1::{self, users_client::UsersClient};

use crate::{Client, Result};

/// An account, as the server shows it (never its password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub login: String,
    pub full_name: String,
    pub groups: Vec<String>,
    pub disabled: bool,
    /// Nanoseconds since the Unix epoch.
    pub last_updated_ns: i64,
}

fn user_from_proto(u: v1::User) -> User {
    User {
        login: u.login,
        full_name: u.full_name,
        groups: u.groups,
        disabled: u.disabled,
        last_updated_ns: u.last_updated_ns,
    }
}

impl Client {
    fn users(&self) -> UsersClient<crate::Channel> {
        UsersClient::new(self.channel.clone())
    }

    pub async fn create_user(
        &self,
        login: &str,
        password: &str,
        full_name: &str,
        groups: &[&str],
    ) -> Result<()> {
        self.users()
            .create_user(self.unary(v1::CreateUserRequest {
                login: login.into(),
                password: password.into(),
                full_name: full_name.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            }))
            .await?;
        Ok(())
    }

    /// Replaces the full name and groups, and the password when one is given.
    pub async fn update_user(
        &self,
        login: &str,
        full_name: &str,
        groups: &[&str],
        password: Option<&str>,
    ) -> Result<()> {
        self.users()
            .update_user(self.unary(v1::UpdateUserRequest {
                login: login.into(),
                full_name: full_name.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                password: password.map(str::to_owned),
            }))
            .await?;
        Ok(())
    }

    pub async fn delete_user(&self, login: &str) -> Result<()> {
        self.users()
            .delete_user(self.unary(v1::DeleteUserRequest {
                login: login.into(),
            }))
            .await?;
        Ok(())
    }

    pub async fn set_user_enabled(&self, login: &str, enabled: bool) -> Result<()> {
        self.users()
            .set_user_enabled(self.unary(v1::SetUserEnabledRequest {
                login: login.into(),
                enabled,
            }))
            .await?;
        Ok(())
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let r = self
            .users()
            .list_users(self.unary(v1::ListUsersRequest {}))
            .await?;
        Ok(r.into_inner()
            .users
            .into_iter()
            .map(user_from_proto)
            .collect())
    }

    pub async fn get_user(&self, login: &str) -> Result<User> {
        let r = self
            .users()
            .get_user(self.unary(v1::GetUserRequest {
                login: login.into(),
            }))
            .await?;
        Ok(user_from_proto(r.into_inner()))
    }

    /// Sets a user's password (admins).
    pub async fn reset_password(&self, login: &str, new_password: &str) -> Result<()> {
        self.users()
            .reset_password(self.unary(v1::ResetPasswordRequest {
                login: login.into(),
                new_password: new_password.into(),
            }))
            .await?;
        Ok(())
    }

    /// Changes a password given the current one.
    pub async fn change_password(
        &self,
        login: &str,
        current: &str,
        new_password: &str,
    ) -> Result<()> {
        self.users()
            .change_password(self.unary(v1::ChangePasswordRequest {
                login: login.into(),
                current_password: current.into(),
                new_password: new_password.into(),
            }))
            .await?;
        Ok(())
    }
}
