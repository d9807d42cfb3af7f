//! User management.
//!
//! Reading other users needs "View" or "Add, Delete and Modify a User"; changing
//! them needs the latter. Nobody grants a role with permissions they lack
//! themselves. Disabling or deleting a user, or changing a password, ends that
//! user's sessions.

use super::auth::user_ref;
use super::lockout::ThrottleKeys;
use super::{Access, Actor, Caller, Origin, Service, ServiceError, ServiceResult};
use crate::domain::{AuditKind, NewAuditEvent, NewUser, Permission, Role, User, UserId, UserRef};
use secrecy::SecretString;

/// A user to create.
#[derive(Debug)]
pub struct UserInput {
    pub name: String,
    pub password: SecretString,
    pub roles: Vec<String>,
    pub full_name: String,
    pub email: String,
    pub description: String,
    pub enabled: bool,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub roles: Option<Vec<String>>,
}

const MAX_NAME: usize = 64;
const MAX_TEXT: usize = 512;

/// A user name: 1 to 64 characters, letters, digits, `.`, `_` and `-`, starting
/// with a letter or digit. (No `@` or `\`: dialects add domains around names.)
pub fn validate_user_name(name: &str) -> ServiceResult<()> {
    let mut chars = name.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok_first || !ok_rest || name.len() > MAX_NAME {
        return Err(ServiceError::Invalid(format!(
            "user name {name:?}: use 1 to {MAX_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit"
        )));
    }
    Ok(())
}

fn validate_text(field: &str, value: &str) -> ServiceResult<()> {
    if value.len() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(ServiceError::Invalid(format!(
            "{field}: at most {MAX_TEXT} bytes, no control characters"
        )));
    }
    Ok(())
}

fn normalize_roles(access: &Access, roles: &[String]) -> ServiceResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for r in roles {
        let role = Role::find(r.trim())
            .ok_or_else(|| ServiceError::Invalid(format!("unknown role {r:?}")))?;
        if let Some(missing) = role.permissions.iter().find(|p| !access.has(*p)) {
            return Err(ServiceError::Forbidden(missing));
        }
        if !out.iter().any(|o| o == role.name) {
            out.push(role.name.to_string());
        }
    }
    Ok(out)
}

impl Service {
    pub async fn create_user(
        &self,
        actor: &Actor<'_>,
        input: UserInput,
        origin: &Origin,
    ) -> ServiceResult<User> {
        let access = self.access(actor).await?;
        access.require(Permission::UserManagement)?;
        validate_user_name(&input.name)?;
        for (field, v) in [
            ("full name", &input.full_name),
            ("email", &input.email),
            ("description", &input.description),
        ] {
            validate_text(field, v)?;
        }
        let roles = normalize_roles(&access, &input.roles)?;
        if self.store().find_user_by_name(&input.name).await?.is_some() {
            return Err(ServiceError::Conflict(format!(
                "a user named {:?} already exists",
                input.name
            )));
        }
        let password_hash = self.inner.passwords.hash(&input.password).await?;
        let user = self
            .store()
            .create_user(NewUser {
                name: input.name,
                guid: uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase(),
                full_name: input.full_name,
                email: input.email,
                description: input.description,
                enabled: input.enabled,
                roles,
                password_hash,
                created_at: self.now(),
            })
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict(_) => {
                    ServiceError::Conflict("a user with that name already exists".into())
                }
                other => other.into(),
            })?;
        self.audit_user(
            &access,
            &user,
            AuditKind::UserCreated,
            origin,
            format!("roles={}", user.roles.join(",")),
        )
        .await;
        Ok(user)
    }

    /// Users visible to the actor: everyone with "View" or user management, else only themself.
    pub async fn list_users(
        &self,
        actor: &Actor<'_>,
        after: Option<UserId>,
        limit: usize,
    ) -> ServiceResult<Vec<User>> {
        let access = self.access(actor).await?;
        if access.has(Permission::View) || access.has(Permission::UserManagement) {
            Ok(self
                .store()
                .list_users(after, limit.clamp(1, super::sessions::MAX_PAGE))
                .await?)
        } else {
            Ok(access
                .user
                .into_iter()
                .filter(|u| after.is_none_or(|a| u.id > a))
                .map(std::sync::Arc::unwrap_or_clone)
                .collect())
        }
    }

    pub async fn get_user(&self, actor: &Actor<'_>, id: UserId) -> ServiceResult<User> {
        let access = self.access(actor).await?;
        if !access.is(id) && !access.has(Permission::View) {
            access.require(Permission::UserManagement)?;
        }
        self.store()
            .get_user(id)
            .await?
            .ok_or(ServiceError::NotFound("user"))
    }

    /// Every user, for the user administration view: needs user management.
    pub async fn list_users_to_manage(
        &self,
        actor: &Actor<'_>,
        after: Option<UserId>,
        limit: usize,
    ) -> ServiceResult<Vec<User>> {
        let access = self.access(actor).await?;
        access.require(Permission::UserManagement)?;
        Ok(self
            .store()
            .list_users(after, limit.clamp(1, super::sessions::MAX_PAGE))
            .await?)
    }

    /// Finds a user by name (case-insensitive), with the same visibility as `get_user`.
    pub async fn find_user(&self, actor: &Actor<'_>, name: &str) -> ServiceResult<User> {
        let user = self
            .store()
            .find_user_by_name(name)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        self.get_user(actor, user.id).await
    }

    pub async fn update_user(
        &self,
        actor: &Actor<'_>,
        id: UserId,
        changes: UserChanges,
        origin: &Origin,
    ) -> ServiceResult<User> {
        let access = self.access(actor).await?;
        access.require(Permission::UserManagement)?;
        let mut user = self
            .store()
            .get_user(id)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        // Changing a user who holds permissions the actor lacks would be an escalation.
        if let Some(missing) = user.permissions().iter().find(|p| !access.has(*p)) {
            return Err(ServiceError::Forbidden(missing));
        }
        if let Some(v) = changes.full_name {
            validate_text("full name", &v)?;
            user.full_name = v;
        }
        if let Some(v) = changes.email {
            validate_text("email", &v)?;
            user.email = v;
        }
        if let Some(v) = changes.description {
            validate_text("description", &v)?;
            user.description = v;
        }
        if let Some(roles) = changes.roles {
            user.roles = normalize_roles(&access, &roles)?;
        }
        let was_enabled = user.enabled;
        if let Some(enabled) = changes.enabled {
            if !enabled && access.is(id) {
                return Err(ServiceError::NotAllowed("you cannot disable yourself"));
            }
            user.enabled = enabled;
        }
        user.updated_at = self.now();
        self.store().update_user(&user).await?;
        let kind = match (was_enabled, user.enabled) {
            (true, false) => AuditKind::UserDisabled,
            (false, true) => AuditKind::UserEnabled,
            _ => AuditKind::UserChanged,
        };
        self.audit_user(
            &access,
            &user,
            kind,
            origin,
            format!("roles={}", user.roles.join(",")),
        )
        .await;
        if was_enabled && !user.enabled {
            self.revoke_user_sessions(user.id, None, actor_ref(&access), &origin.source)
                .await?;
        }
        Ok(user)
    }

    /// Sets a password: one's own, or anyone's with user management. A password
    /// set by someone else (or at the command line) ends all of the user's
    /// sessions; changing one's own keeps the session that made the change and ends
    /// the others if `session.password_change_ends_other_sessions` says so.
    pub async fn set_password(
        &self,
        actor: &Actor<'_>,
        id: UserId,
        password: &SecretString,
        origin: &Origin,
    ) -> ServiceResult<()> {
        let access = self.access(actor).await?;
        if !access.is(id) {
            access.require(Permission::UserManagement)?;
        }
        let mut user = self
            .store()
            .get_user(id)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        if !access.is(id)
            && let Some(missing) = user.permissions().iter().find(|p| !access.has(*p))
        {
            return Err(ServiceError::Forbidden(missing));
        }
        user.password_hash = self.inner.passwords.hash(password).await?;
        user.updated_at = self.now();
        self.store().update_user(&user).await?;
        self.audit_user(
            &access,
            &user,
            AuditKind::PasswordChanged,
            origin,
            String::new(),
        )
        .await;
        match actor {
            Actor::User(c) if c.user_id() == id => {
                if self
                    .inner
                    .config
                    .session
                    .password_change_ends_other_sessions
                {
                    self.revoke_user_sessions(
                        user.id,
                        Some(c.session.id),
                        actor_ref(&access),
                        &origin.source,
                    )
                    .await?;
                }
            }
            _ => {
                self.revoke_user_sessions(user.id, None, actor_ref(&access), &origin.source)
                    .await?;
            }
        }
        Ok(())
    }

    /// Self-service: changes the caller's own password after checking the current
    /// one. A wrong current password counts towards a lockout like a failed login.
    pub async fn change_own_password(
        &self,
        caller: &Caller,
        current: &SecretString,
        new: &SecretString,
        origin: &Origin,
    ) -> ServiceResult<()> {
        let actor = Actor::User(caller);
        let user = self
            .access(&actor)
            .await?
            .user
            .ok_or(ServiceError::Unauthenticated)?;
        let keys = ThrottleKeys::new(&user.name, &origin.source);
        self.check_throttle(&keys).await?;
        if !self
            .inner
            .passwords
            .verify(current, Some(&user.password_hash))
            .await?
        {
            let locked = self
                .count_failure(&keys, &user_ref(&user), origin.dialect, &origin.source)
                .await?;
            return Err(match locked {
                Some(retry_after) => ServiceError::AccountLocked { retry_after },
                None => ServiceError::Invalid("the current password is not right".into()),
            });
        }
        self.set_password(&actor, user.id, new, origin).await
    }

    pub async fn delete_user(
        &self,
        actor: &Actor<'_>,
        id: UserId,
        origin: &Origin,
    ) -> ServiceResult<()> {
        let access = self.access(actor).await?;
        access.require(Permission::UserManagement)?;
        if access.is(id) {
            return Err(ServiceError::NotAllowed("you cannot delete yourself"));
        }
        let user = self
            .store()
            .get_user(id)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        if let Some(missing) = user.permissions().iter().find(|p| !access.has(*p)) {
            return Err(ServiceError::Forbidden(missing));
        }
        self.revoke_user_sessions(user.id, None, actor_ref(&access), &origin.source)
            .await?;
        if !self.store().delete_user(id).await? {
            return Err(ServiceError::NotFound("user"));
        }
        self.audit_user(
            &access,
            &user,
            AuditKind::UserDeleted,
            origin,
            String::new(),
        )
        .await;
        Ok(())
    }

    /// On an empty store, creates `admin` with the master role. Returns the password
    /// when it had to generate one (to be shown once), `None` if nothing was created.
    pub async fn bootstrap_admin(
        &self,
        password: Option<SecretString>,
    ) -> ServiceResult<Option<BootstrapOutcome>> {
        if self.store().count_users().await? > 0 {
            return Ok(None);
        }
        let (password, generated) = match password {
            Some(p) => (p, false),
            None => {
                let mut raw = [0u8; 18];
                getrandom::fill(&mut raw)
                    .map_err(|e| ServiceError::Unavailable(anyhow::anyhow!("OS RNG: {e}")))?;
                let text =
                    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw);
                (SecretString::from(text), true)
            }
        };
        let input = UserInput {
            name: "admin".into(),
            password: password.clone(),
            roles: vec![Role::MASTER.into()],
            full_name: "Administrator".into(),
            email: String::new(),
            description: "Created on first start".into(),
            enabled: true,
        };
        let origin = Origin {
            dialect: crate::domain::Dialect::Native,
            source: "bootstrap".into(),
        };
        match self.create_user(&Actor::System, input, &origin).await {
            Ok(user) => Ok(Some(BootstrapOutcome {
                user,
                generated_password: generated.then_some(password),
            })),
            // Another instance won the race on an empty shared store.
            Err(ServiceError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn audit_user(
        &self,
        access: &Access,
        user: &User,
        kind: AuditKind,
        origin: &Origin,
        detail: String,
    ) {
        self.announce_user_change(user, kind);
        self.audit(NewAuditEvent {
            actor: actor_ref(access),
            subject: Some(user_ref(user)),
            source: origin.source.clone(),
            dialect: Some(origin.dialect),
            detail,
            ..self.event(kind)
        })
        .await;
    }
}

/// What `bootstrap_admin` created.
#[derive(Debug)]
pub struct BootstrapOutcome {
    pub user: User,
    /// Set when no password was supplied: show it once.
    pub generated_password: Option<SecretString>,
}

fn actor_ref(access: &Access) -> Option<UserRef> {
    access.user.as_deref().map(user_ref)
}

#[cfg(test)]
mod tests {
    use super::validate_user_name;

    #[test]
    fn user_names_are_plain() {
        for ok in ["admin", "j.smith", "a", "x_1-2", &"a".repeat(64)] {
            assert!(validate_user_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "a b", "a@b", "dom\\u", "é", &"a".repeat(65)] {
            assert!(validate_user_name(bad).is_err(), "{bad}");
        }
    }
}
