//! Strata's `Users` service: the same account operations as KurrentDB's, with Strata's typed
//! error details.

use std::sync::Arc;

use prost::Message;
use strata_auth::{Access, Authenticator, Error, UserRecord, Users};
use strata_proto::v1::{self, error_detail::Kind, users_server::Users as UsersApi};
use tonic::{Code, Request, Response, Status};

use crate::status::{from_engine, invalid};

pub struct UsersService {
    auth: Option<Arc<Authenticator>>,
}

impl UsersService {
    /// `None` in insecure mode.
    pub fn new(auth: Option<Arc<Authenticator>>) -> Self {
        UsersService { auth }
    }

    fn users(&self) -> Result<&Arc<Users>, Status> {
        self.auth.as_ref().map(|a| a.users()).ok_or_else(|| {
            Status::failed_precondition("this server runs insecure (no authentication), so it has no users to manage; start it with --tls-cert and --tls-key")
        })
    }
}

fn detail(code: Code, message: String, kind: Kind) -> Status {
    let d = v1::ErrorDetail { kind: Some(kind) };
    Status::with_details(code, message, d.encode_to_vec().into())
}

/// The one mapping from account errors to statuses for Strata's API.
pub fn from_auth(e: Error) -> Status {
    let message = e.to_string();
    match e {
        Error::UserNotFound { login } => detail(
            Code::NotFound,
            message,
            Kind::UserNotFound(v1::UserNotFound { login }),
        ),
        Error::UserExists { login } => detail(
            Code::AlreadyExists,
            message,
            Kind::UserExists(v1::UserExists { login }),
        ),
        Error::InvalidArgument { field, reason } => invalid(field, reason),
        Error::WrongPassword { login } => detail(
            Code::PermissionDenied,
            message,
            Kind::AccessDenied(v1::AccessDenied {
                operation: "change the password (the current password is wrong)".into(),
                stream: String::new(),
                user: login,
            }),
        ),
        Error::Corrupt { .. } => Status::data_loss(message),
        Error::TooManyFailures { .. } => detail(
            Code::Unauthenticated,
            message.clone(),
            Kind::Unauthenticated(v1::Unauthenticated { reason: message }),
        ),
        Error::Busy => Status::unavailable(message),
        Error::Engine(e) => from_engine(e),
    }
}

fn user_to_proto(r: &UserRecord) -> v1::User {
    v1::User {
        login: r.login_name.clone(),
        full_name: r.full_name.clone(),
        groups: r.groups.clone(),
        disabled: r.disabled,
        last_updated_ns: r.last_updated_ns,
    }
}

fn admin<T>(request: &Request<T>) -> Result<(), Status> {
    super::require_operator(request, "manage users").and_then(|who| {
        if who.is_admin() {
            Ok(())
        } else {
            Err(super::denied(&who, "manage users", ""))
        }
    })
}

/// The caller is `login`, or an admin.
fn self_or_admin<T>(request: &Request<T>, login: &str) -> Result<(), Status> {
    match super::access(request) {
        who if who.is_admin() => Ok(()),
        Access::User(p) if p.name == login => Ok(()),
        who => Err(super::denied(&who, "manage another user", "")),
    }
}

#[tonic::async_trait]
impl UsersApi for UsersService {
    async fn create_user(
        &self,
        request: Request<v1::CreateUserRequest>,
    ) -> Result<Response<v1::CreateUserResponse>, Status> {
        admin(&request)?;
        let r = request.into_inner();
        self.users()?
            .create(&r.login, &r.full_name, r.groups, &r.password)
            .await
            .map_err(from_auth)?;
        Ok(Response::new(v1::CreateUserResponse {}))
    }

    async fn update_user(
        &self,
        request: Request<v1::UpdateUserRequest>,
    ) -> Result<Response<v1::UpdateUserResponse>, Status> {
        admin(&request)?;
        let r = request.into_inner();
        self.users()?
            .update(&r.login, &r.full_name, r.groups, r.password.as_deref())
            .await
            .map_err(from_auth)?;
        Ok(Response::new(v1::UpdateUserResponse {}))
    }

    async fn delete_user(
        &self,
        request: Request<v1::DeleteUserRequest>,
    ) -> Result<Response<v1::DeleteUserResponse>, Status> {
        admin(&request)?;
        let r = request.into_inner();
        self.users()?.delete(&r.login).await.map_err(from_auth)?;
        Ok(Response::new(v1::DeleteUserResponse {}))
    }

    async fn set_user_enabled(
        &self,
        request: Request<v1::SetUserEnabledRequest>,
    ) -> Result<Response<v1::SetUserEnabledResponse>, Status> {
        admin(&request)?;
        let r = request.into_inner();
        self.users()?
            .set_disabled(&r.login, !r.enabled)
            .await
            .map_err(from_auth)?;
        Ok(Response::new(v1::SetUserEnabledResponse {}))
    }

    async fn list_users(
        &self,
        request: Request<v1::ListUsersRequest>,
    ) -> Result<Response<v1::ListUsersResponse>, Status> {
        admin(&request)?;
        let users = self.users()?.list();
        Ok(Response::new(v1::ListUsersResponse {
            users: users.iter().map(|r| user_to_proto(r)).collect(),
        }))
    }

    async fn get_user(
        &self,
        request: Request<v1::GetUserRequest>,
    ) -> Result<Response<v1::User>, Status> {
        self_or_admin(&request, &request.get_ref().login)?;
        let login = request.into_inner().login;
        let r = self
            .users()?
            .get(&login)
            .ok_or_else(|| from_auth(Error::UserNotFound { login }))?;
        Ok(Response::new(user_to_proto(&r)))
    }

    async fn reset_password(
        &self,
        request: Request<v1::ResetPasswordRequest>,
    ) -> Result<Response<v1::ResetPasswordResponse>, Status> {
        admin(&request)?;
        let r = request.into_inner();
        self.users()?
            .reset_password(&r.login, &r.new_password)
            .await
            .map_err(from_auth)?;
        Ok(Response::new(v1::ResetPasswordResponse {}))
    }

    async fn change_password(
        &self,
        request: Request<v1::ChangePasswordRequest>,
    ) -> Result<Response<v1::ChangePasswordResponse>, Status> {
        self_or_admin(&request, &request.get_ref().login)?;
        let client = super::client_ip(&request);
        let r = request.into_inner();
        self.users()?;
        let auth = self.auth.as_ref().expect("checked by users()");
        auth.change_password(client, &r.login, &r.current_password, &r.new_password)
            .await
            .map_err(from_auth)?;
        Ok(Response::new(v1::ChangePasswordResponse {}))
    }
}
