//! The fixed vocabulary of what a token may do. Each route declares one scope; a
//! token holds a set of them, and `admin` holds them all.

use std::fmt;

/// One permission. The names are a contract with every stored token and every client
/// script: they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    OrdersRead,
    OrdersWrite,
    InventoryRead,
    InventoryWrite,
    /// Billing, shipping and analytics views.
    ViewsRead,
    /// Event history, the live stream and exports.
    EventsRead,
    SubscriptionsManage,
    /// Storefront connections.
    SourcesManage,
    ProjectionsManage,
    TokensManage,
    MetricsRead,
    /// Erasing a customer's personal data.
    PrivacyErase,
    /// Reading personal data in bulk: exports with `include_personal_data`.
    PrivacyRead,
    /// Every scope, including those added later.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 14] = [
        Scope::OrdersRead,
        Scope::OrdersWrite,
        Scope::InventoryRead,
        Scope::InventoryWrite,
        Scope::ViewsRead,
        Scope::EventsRead,
        Scope::SubscriptionsManage,
        Scope::SourcesManage,
        Scope::ProjectionsManage,
        Scope::TokensManage,
        Scope::MetricsRead,
        Scope::PrivacyErase,
        Scope::PrivacyRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OrdersRead => "orders:read",
            Scope::OrdersWrite => "orders:write",
            Scope::InventoryRead => "inventory:read",
            Scope::InventoryWrite => "inventory:write",
            Scope::ViewsRead => "views:read",
            Scope::EventsRead => "events:read",
            Scope::SubscriptionsManage => "subscriptions:manage",
            Scope::SourcesManage => "sources:manage",
            Scope::ProjectionsManage => "projections:manage",
            Scope::TokensManage => "tokens:manage",
            Scope::MetricsRead => "metrics:read",
            Scope::PrivacyErase => "privacy:erase",
            Scope::PrivacyRead => "privacy:read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes: a bit per scope, so a check on the request path is one AND.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u16);

impl Scopes {
    pub fn of(scopes: impl IntoIterator<Item = Scope>) -> Scopes {
        Scopes(scopes.into_iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// Every scope but `admin`.
    pub fn all_but_admin() -> Scopes {
        Scopes::of(Scope::ALL.into_iter().filter(|s| *s != Scope::Admin))
    }

    /// A comma-separated list (`orders:read,orders:write`), or a list of names.
    pub fn parse_list<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, String> {
        let mut scopes = Scopes::default();
        for name in names {
            let name = name.trim();
            let scope = Scope::parse(name).ok_or_else(|| {
                format!(
                    "`{name}` is not a scope; the scopes are {}",
                    Scopes::of(Scope::ALL)
                )
            })?;
            scopes.0 |= scope.bit();
        }
        if scopes.is_empty() {
            return Err("must name at least one scope".into());
        }
        Ok(scopes)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether a request needing `scope` may go on: it is held, or `admin` is.
    pub fn allows(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    /// The first of `wanted` these scopes do not cover: what a token cannot grant.
    pub fn first_missing(self, wanted: Scopes) -> Option<Scope> {
        wanted.iter().find(|s| !self.allows(*s))
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |s| self.0 & s.bit() != 0)
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Scope::as_str).collect()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_reads_back_from_its_name() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("orders:delete"), None);
    }

    #[test]
    fn admin_allows_everything_and_a_plain_set_only_itself() {
        let admin = Scopes::of([Scope::Admin]);
        assert!(Scope::ALL.into_iter().all(|s| admin.allows(s)));
        let reader = Scopes::parse_list("orders:read, views:read".split(',')).unwrap();
        assert!(reader.allows(Scope::OrdersRead));
        assert!(!reader.allows(Scope::OrdersWrite));
        assert!(!reader.allows(Scope::Admin));
        assert_eq!(reader.to_string(), "orders:read,views:read");
    }

    #[test]
    fn a_token_cannot_grant_what_it_does_not_hold() {
        let manager = Scopes::of([Scope::TokensManage, Scope::OrdersRead]);
        assert_eq!(manager.first_missing(Scopes::of([Scope::OrdersRead])), None);
        assert_eq!(
            manager.first_missing(Scopes::of([Scope::OrdersRead, Scope::OrdersWrite])),
            Some(Scope::OrdersWrite)
        );
        assert_eq!(
            manager.first_missing(Scopes::of([Scope::Admin])),
            Some(Scope::Admin)
        );
        assert_eq!(
            Scopes::all_but_admin().first_missing(Scopes::of([Scope::Admin])),
            Some(Scope::Admin)
        );
    }

    #[test]
    fn unknown_and_empty_lists_are_refused() {
        assert!(Scopes::parse_list(["orders:reed"])
            .unwrap_err()
            .contains("`orders:reed` is not a scope"));
        assert!(Scopes::parse_list(std::iter::empty()).is_err());
    }
}
