//! KurrentDB's `Users` service on the accounts of `strata-auth`. Managing users takes
//! `$admins`; a user may read their own details and change their own password.

use std::sync::Arc;

use strata_auth::{Access, Authenticator, Error, Users};
use strata_kurrentdb_proto::event_store::client::users::{
    self as ku, users_server::Users as UsersApi,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

use crate::kurrent::status::access_denied;

pub struct KurrentUsers {
    auth: Option<Arc<Authenticator>>,
}

impl KurrentUsers {
    /// `None` in insecure mode: there are no accounts to manage.
    pub fn new(auth: Option<Arc<Authenticator>>) -> Self {
        KurrentUsers { auth }
    }

    fn users(&self) -> Result<&Arc<Users>, Status> {
        self.auth.as_ref().map(|a| a.users()).ok_or_else(|| {
            Status::failed_precondition("this server runs insecure (no authentication), so it has no users to manage; start it with --tls-cert and --tls-key")
        })
    }
}

fn error(e: Error) -> Status {
    let message = e.to_string();
    match e {
        Error::UserNotFound { login } => {
            let mut s = Status::new(Code::NotFound, message);
            s.metadata_mut()
                .insert("exception", MetadataValue::from_static("user-not-found"));
            if let Ok(v) = login.parse() {
                s.metadata_mut().insert("login-name", v);
            }
            s
        }
        Error::UserExists { .. } => {
            let mut s = Status::new(Code::AlreadyExists, message);
            s.metadata_mut()
                .insert("exception", MetadataValue::from_static("user-conflict"));
            s
        }
        Error::InvalidArgument { .. } => Status::invalid_argument(message),
        Error::WrongPassword { .. } => Status::new(Code::PermissionDenied, message),
        Error::Corrupt { .. } => Status::data_loss(message),
        Error::TooManyFailures { .. } => Status::unauthenticated(message),
        Error::Busy => Status::unavailable(message),
        Error::Engine(e) => {
            super::super::kurrent::status::from_strata(crate::status::from_engine(e))
        }
    }
}

fn admin<T>(request: &Request<T>) -> Result<Access, Status> {
    let who = super::access(request);
    if who.is_admin() {
        Ok(who)
    } else {
        Err(access_denied())
    }
}

/// The caller is `login`, or an admin.
fn self_or_admin<T>(request: &Request<T>, login: &str) -> Result<(), Status> {
    match super::access(request) {
        who if who.is_admin() => Ok(()),
        Access::User(p) if p.name == login => Ok(()),
        _ => Err(access_denied()),
    }
}

macro_rules! options {
    ($req:expr) => {
        $req.into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("the request carries no options"))?
    };
}

#[tonic::async_trait]
impl UsersApi for KurrentUsers {
    async fn create(
        &self,
        request: Request<ku::CreateReq>,
    ) -> Result<Response<ku::CreateResp>, Status> {
        admin(&request)?;
        let o = options!(request);
        self.users()?
            .create(&o.login_name, &o.full_name, o.groups, &o.password)
            .await
            .map_err(error)?;
        Ok(Response::new(ku::CreateResp {}))
    }

    async fn update(
        &self,
        request: Request<ku::UpdateReq>,
    ) -> Result<Response<ku::UpdateResp>, Status> {
        admin(&request)?;
        let o = options!(request);
        let password = (!o.password.is_empty()).then_some(o.password.as_str());
        self.users()?
            .update(&o.login_name, &o.full_name, o.groups, password)
            .await
            .map_err(error)?;
        Ok(Response::new(ku::UpdateResp {}))
    }

    async fn delete(
        &self,
        request: Request<ku::DeleteReq>,
    ) -> Result<Response<ku::DeleteResp>, Status> {
        admin(&request)?;
        let o = options!(request);
        self.users()?.delete(&o.login_name).await.map_err(error)?;
        Ok(Response::new(ku::DeleteResp {}))
    }

    async fn disable(
        &self,
        request: Request<ku::DisableReq>,
    ) -> Result<Response<ku::DisableResp>, Status> {
        admin(&request)?;
        let o = options!(request);
        self.users()?
            .set_disabled(&o.login_name, true)
            .await
            .map_err(error)?;
        Ok(Response::new(ku::DisableResp {}))
    }

    async fn enable(
        &self,
        request: Request<ku::EnableReq>,
    ) -> Result<Response<ku::EnableResp>, Status> {
        admin(&request)?;
        let o = options!(request);
        self.users()?
            .set_disabled(&o.login_name, false)
            .await
            .map_err(error)?;
        Ok(Response::new(ku::EnableResp {}))
    }

    type DetailsStream = ReceiverStream<Result<ku::DetailsResp, Status>>;

    async fn details(
        &self,
        request: Request<ku::DetailsReq>,
    ) -> Result<Response<Self::DetailsStream>, Status> {
        let login = request
            .get_ref()
            .options
            .as_ref()
            .map(|o| o.login_name.clone())
            .unwrap_or_default();
        if login.is_empty() {
            admin(&request)?;
        } else {
            self_or_admin(&request, &login)?;
        }
        let users = self.users()?;
        let records = if login.is_empty() {
            users.list()
        } else {
            vec![users.get(&login).ok_or_else(|| {
                error(Error::UserNotFound {
                    login: login.clone(),
                })
            })?]
        };
        let (tx, rx) = tokio::sync::mpsc::channel(records.len().max(1));
        for r in records {
            let details = ku::details_resp::UserDetails {
                login_name: r.login_name.clone(),
                full_name: r.full_name.clone(),
                groups: r.groups.clone(),
                last_updated: Some(ku::details_resp::user_details::DateTime {
                    ticks_since_epoch: r.last_updated_ns / 100,
                }),
                disabled: r.disabled,
            };
            let _ = tx.try_send(Ok(ku::DetailsResp {
                user_details: Some(details),
            }));
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn change_password(
        &self,
        request: Request<ku::ChangePasswordReq>,
    ) -> Result<Response<ku::ChangePasswordResp>, Status> {
        let login = request
            .get_ref()
            .options
            .as_ref()
            .map(|o| o.login_name.clone())
            .unwrap_or_default();
        self_or_admin(&request, &login)?;
        let client = super::client_ip(&request);
        let o = options!(request);
        self.users()?;
        let auth = self.auth.as_ref().expect("checked by users()");
        auth.change_password(client, &o.login_name, &o.current_password, &o.new_password)
            .await
            .map_err(error)?;
        Ok(Response::new(ku::ChangePasswordResp {}))
    }

    async fn reset_password(
        &self,
        request: Request<ku::ResetPasswordReq>,
    ) -> Result<Response<ku::ResetPasswordResp>, Status> {
        admin(&request)?;
        let o = options!(request);
        self.users()?
            .reset_password(&o.login_name, &o.new_password)
            .await
            .map_err(error)?;
        Ok(Response::new(ku::ResetPasswordResp {}))
    }
}
