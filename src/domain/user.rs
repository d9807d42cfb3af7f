//! Users, roles and permissions.

use super::Timestamp;
use std::fmt;

/// Numeric user id, as Commvault clients know it (`userId`, `aliasName`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a role lets its holder do. Names follow Commvault's permission names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// "Administrative Management": server-wide settings and audit of everyone.
    AdministrativeManagement,
    /// "Add, Delete and Modify a User": manage users and see or end their sessions.
    UserManagement,
    /// "View": read users and the audit trail, without changing anything.
    View,
}

impl Permission {
    pub const ALL: [Permission; 3] = [
        Permission::AdministrativeManagement,
        Permission::UserManagement,
        Permission::View,
    ];

    /// The vendor's wording, used in error messages and listings.
    pub fn display_name(self) -> &'static str {
        match self {
            Permission::AdministrativeManagement => "Administrative Management",
            Permission::UserManagement => "Add, Delete and Modify a User",
            Permission::View => "View",
        }
    }

    /// Stable machine name (native API, CLI).
    pub fn key(self) -> &'static str {
        match self {
            Permission::AdministrativeManagement => "administrative-management",
            Permission::UserManagement => "user-management",
            Permission::View => "view",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Permission::AdministrativeManagement => 1,
            Permission::UserManagement => 2,
            Permission::View => 4,
        }
    }
}

/// A set of permissions (small enough for a bit set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Permissions(u8);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);

    pub const fn of(list: &[Permission]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < list.len() {
            bits |= list[i].bit();
            i += 1;
        }
        Permissions(bits)
    }

    pub fn has(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn union(self, other: Permissions) -> Self {
        Permissions(self.0 | other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL.into_iter().filter(move |p| self.has(*p))
    }
}

/// A named set of permissions. The built-in roles are fixed; users refer to them by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: &'static str,
    pub description: &'static str,
    pub permissions: Permissions,
}

impl Role {
    pub const MASTER: &'static str = "master";
    pub const USER_ADMIN: &'static str = "user-admin";
    pub const VIEW: &'static str = "view";

    /// The built-in roles. A user with no role is a plain user: own sessions only.
    pub const BUILTIN: [Role; 3] = [
        Role {
            name: Role::MASTER,
            description: "Every permission",
            permissions: Permissions::of(&Permission::ALL),
        },
        Role {
            name: Role::USER_ADMIN,
            description: "Add, delete and modify users; see and end their sessions",
            permissions: Permissions::of(&[Permission::UserManagement, Permission::View]),
        },
        Role {
            name: Role::VIEW,
            description: "Read users and the audit trail",
            permissions: Permissions::of(&[Permission::View]),
        },
    ];

    pub fn find(name: &str) -> Option<Role> {
        Role::BUILTIN
            .into_iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
    }

    /// The union of the permissions of the named roles; unknown names grant nothing.
    pub fn permissions_of<S: AsRef<str>>(roles: &[S]) -> Permissions {
        roles
            .iter()
            .filter_map(|r| Role::find(r.as_ref()))
            .fold(Permissions::NONE, |acc, r| acc.union(r.permissions))
    }
}

/// A PHC-format Argon2id hash string. Never rendered on any wire.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    /// Upper-case hyphenated GUID (Commvault `userGUID`).
    pub guid: String,
    pub full_name: String,
    pub email: String,
    pub description: String,
    pub enabled: bool,
    /// Names of built-in roles, lower case.
    pub roles: Vec<String>,
    pub password_hash: PasswordHash,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl User {
    pub fn permissions(&self) -> Permissions {
        Role::permissions_of(&self.roles)
    }
}

/// A user as created; the store assigns the id.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub name: String,
    pub guid: String,
    pub full_name: String,
    pub email: String,
    pub description: String,
    pub enabled: bool,
    pub roles: Vec<String>,
    pub password_hash: PasswordHash,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_roles_grant_what_they_say() {
        let master = Role::permissions_of(&["master"]);
        assert!(Permission::ALL.iter().all(|p| master.has(*p)));
        let admin = Role::permissions_of(&["User-Admin"]);
        assert!(admin.has(Permission::UserManagement));
        assert!(!admin.has(Permission::AdministrativeManagement));
        let view = Role::permissions_of(&["view"]);
        assert!(view.has(Permission::View) && !view.has(Permission::UserManagement));
        let plain: Permissions = Role::permissions_of::<&str>(&[]);
        assert_eq!(plain.iter().count(), 0);
        assert_eq!(Role::permissions_of(&["nonsense"]), Permissions::NONE);
    }
}
