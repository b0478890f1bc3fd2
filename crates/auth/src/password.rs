//! Password hashing with argon2id (the argon2 crate's defaults: 19 MiB, 2 passes, 1 lane, the
//! parameters OWASP recommends), stored as PHC strings so that parameters can change later
//! without invalidating stored hashes. Both functions take tens of milliseconds and much
//! memory: call them off the async threads and bound how many run at once
//! ([`crate::Authenticator`] does).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// The PHC string of `password` with a fresh random salt.
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// Whether `password` matches `phc` (false for a malformed hash too).
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = super::hash("changeit");
        let b = super::hash("changeit");
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        assert!(super::verify("changeit", &a));
        assert!(!super::verify("changeIt", &a));
        assert!(!super::verify("changeit", "not a hash"));
    }
}
