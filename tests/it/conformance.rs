//! One store conformance suite, generated for every backend by `conformance!`.
//!
//! Each test gets a fresh, private store (its own database file, database or key
//! prefix) and checks one part of the `Store` contract.

use crate::support::backends::{TestDatabase, TestRedisPrefix, test_store_options};
use sessiond::domain::{
    AuditKind, ClientInfo, ConsoleType, Dialect, EndReason, NewAuditEvent, NewSession, NewUser,
    PasswordHash, SessionEnd, SessionId, SessionToken, Timestamp, User, UserId, UserRef,
};
use sessiond::store::{
    AuditQuery, SessionCursor, SessionLimit, SessionQuery, StateFilter, Store, StoreError,
};
use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// A store for one test, with whatever must live as long as it (a temp dir, a
/// guard that drops a database or deletes a key prefix).
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub _guard: Box<dyn Any + Send>,
}

pub async fn sqlite_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
    let store = sessiond::store::open(&url).await.expect("open sqlite");
    Fixture {
        store,
        _guard: Box::new(dir),
    }
}

pub async fn postgres_fixture() -> Fixture {
    let db = TestDatabase::create().await;
    let store = sessiond::store::open_with(&db.url(), &test_store_options("unused:"))
        .await
        .expect("open postgres");
    Fixture {
        store,
        _guard: Box::new(db),
    }
}

pub async fn redis_fixture() -> Fixture {
    let prefix = TestRedisPrefix::create().await;
    let store = sessiond::store::open_with(&prefix.url(), &test_store_options(&prefix.prefix))
        .await
        .expect("open redis");
    Fixture {
        store,
        _guard: Box::new(prefix),
    }
}

const T0: i64 = 1_700_000_000_000;
const MIN: Duration = Duration::from_secs(60);

fn at(ms_after_t0: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0 + ms_after_t0)
}

fn mins(n: i64) -> i64 {
    n * 60_000
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        name: name.into(),
        guid: uuid::Uuid::new_v4().to_string().to_uppercase(),
        full_name: format!("{name} full"),
        email: format!("{name}@example.test"),
        description: "d".into(),
        enabled: true,
        roles: vec!["view".into()],
        password_hash: PasswordHash("$argon2id$fake".into()),
        created_at: at(0),
    }
}

fn new_session(
    user: &User,
    created: Timestamp,
    idle: Duration,
    life: Duration,
) -> (NewSession, SessionToken) {
    let token = SessionToken::generate().expect("rng");
    (
        NewSession {
            id: SessionId::generate(),
            token_hash: token.hash(),
            user_id: user.id,
            user_name: user.name.clone(),
            client: ClientInfo {
                host: "10.0.0.1".into(),
                user_agent: "ua".into(),
                device_id: "dev".into(),
                description: "desc".into(),
            },
            console_type: ConsoleType::CommandLine,
            dialect: Dialect::Commvault,
            created_at: created,
            idle_timeout: idle,
            expires_at: created.plus(life),
        },
        token,
    )
}

async fn session_at(
    store: &dyn Store,
    user: &User,
    created: Timestamp,
) -> sessiond::domain::Session {
    let (n, _) = new_session(user, created, 30 * MIN, 24 * 60 * MIN);
    store
        .create_session(n, SessionLimit::Unlimited)
        .await
        .expect("create session")
        .session
}

fn query(user: Option<UserId>, state: StateFilter, now: Timestamp, limit: usize) -> SessionQuery {
    SessionQuery {
        user,
        state,
        host: None,
        now,
        after: None,
        limit,
    }
}

pub async fn users_crud(f: Fixture) {
    let s = f.store.as_ref();
    assert_eq!(s.count_users().await.unwrap(), 0);
    let alice = s.create_user(new_user("Alice")).await.unwrap();
    assert_eq!(alice.name, "Alice");
    assert_eq!(alice.roles, vec!["view".to_string()]);
    assert!(matches!(
        s.create_user(new_user("alice")).await,
        Err(StoreError::Conflict(_))
    ));
    let bob = s.create_user(new_user("bob")).await.unwrap();
    assert!(bob.id > alice.id);
    assert_eq!(s.count_users().await.unwrap(), 2);
    assert_eq!(s.get_user(alice.id).await.unwrap().unwrap(), alice);
    assert_eq!(
        s.find_user_by_name("ALICE").await.unwrap().unwrap().id,
        alice.id
    );
    assert!(s.find_user_by_name("carol").await.unwrap().is_none());
    assert!(s.get_user(UserId(9_999)).await.unwrap().is_none());

    let page = s.list_users(None, 1).await.unwrap();
    assert_eq!(
        page.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![alice.id]
    );
    let page = s.list_users(Some(alice.id), 10).await.unwrap();
    assert_eq!(page.iter().map(|u| u.id).collect::<Vec<_>>(), vec![bob.id]);

    let mut changed = bob.clone();
    changed.email = "new@example.test".into();
    changed.enabled = false;
    changed.roles = vec!["master".into(), "view".into()];
    changed.updated_at = at(5);
    s.update_user(&changed).await.unwrap();
    assert_eq!(s.get_user(bob.id).await.unwrap().unwrap(), changed);

    let mut clash = changed.clone();
    clash.name = "ALICE".into();
    assert!(matches!(
        s.update_user(&clash).await,
        Err(StoreError::Conflict(_))
    ));
    let mut ghost = changed.clone();
    ghost.id = UserId(424_242);
    assert!(matches!(
        s.update_user(&ghost).await,
        Err(StoreError::NotFound)
    ));

    assert!(s.delete_user(bob.id).await.unwrap());
    assert!(!s.delete_user(bob.id).await.unwrap());
    assert_eq!(s.count_users().await.unwrap(), 1);
    // Ids are never reused: history refers to them.
    let carol = s.create_user(new_user("carol")).await.unwrap();
    assert!(carol.id > bob.id);
}

pub async fn session_create_find_and_browser_ids(f: Fixture) {
    let s = f.store.as_ref();
    let alice = s.create_user(new_user("alice")).await.unwrap();
    let bob = s.create_user(new_user("bob")).await.unwrap();
    let (n, token) = new_session(&alice, at(0), 30 * MIN, 24 * 60 * MIN);
    let id = n.id;
    let created = s.create_session(n, SessionLimit::Unlimited).await.unwrap();
    assert!(created.evicted.is_empty());
    let a1 = created.session;
    assert_eq!(a1.browser_session_id, 1);
    assert_eq!(a1.id, id);
    assert_eq!(a1.last_accessed_at, at(0));
    assert_eq!(a1.end, None);
    assert_eq!(
        s.find_session_by_token(&token.hash())
            .await
            .unwrap()
            .unwrap(),
        a1
    );
    assert_eq!(s.get_session(id).await.unwrap().unwrap(), a1);
    let other = SessionToken::generate().unwrap();
    assert!(
        s.find_session_by_token(&other.hash())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.get_session(SessionId::generate())
            .await
            .unwrap()
            .is_none()
    );

    let a2 = session_at(s, &alice, at(1)).await;
    let b1 = session_at(s, &bob, at(2)).await;
    assert_eq!(a2.browser_session_id, 2);
    assert_eq!(b1.browser_session_id, 1);

    let (ghost, _) = new_session(
        &User {
            id: UserId(777),
            ..alice.clone()
        },
        at(3),
        MIN,
        MIN,
    );
    assert!(matches!(
        s.create_session(ghost, SessionLimit::Unlimited).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn touch_raises_last_access_within_life(f: Fixture) {
    let s = f.store.as_ref();
    let u = s.create_user(new_user("u")).await.unwrap();
    let live = session_at(s, &u, at(0)).await;
    s.touch_sessions(&[(live.id, at(mins(10)))]).await.unwrap();
    assert_eq!(
        s.get_session(live.id)
            .await
            .unwrap()
            .unwrap()
            .last_accessed_at,
        at(mins(10))
    );
    // Never lowered.
    s.touch_sessions(&[(live.id, at(mins(5)))]).await.unwrap();
    assert_eq!(
        s.get_session(live.id)
            .await
            .unwrap()
            .unwrap()
            .last_accessed_at,
        at(mins(10))
    );
    // The idle deadline moves with the touch: live at +39 min, gone at +40.
    let page = s
        .list_sessions(&query(Some(u.id), StateFilter::Live, at(mins(39)), 10))
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    let page = s
        .list_sessions(&query(Some(u.id), StateFilter::Live, at(mins(40)), 10))
        .await
        .unwrap();
    assert!(page.is_empty());
    // The service vouches for a touch (it saw the session live with its own pending
    // touches), so a touch may move an idle deadline the store thought passed...
    s.touch_sessions(&[(live.id, at(mins(45)))]).await.unwrap();
    assert_eq!(
        s.get_session(live.id)
            .await
            .unwrap()
            .unwrap()
            .last_accessed_at,
        at(mins(45))
    );
    // ...but never past the absolute lifetime.
    s.touch_sessions(&[(live.id, at(mins(24 * 60)))])
        .await
        .unwrap();
    assert_eq!(
        s.get_session(live.id)
            .await
            .unwrap()
            .unwrap()
            .last_accessed_at,
        at(mins(45))
    );
    // Nor does a touch of an ended session change it.
    let other = session_at(s, &u, at(mins(50))).await;
    let end = SessionEnd {
        at: at(mins(51)),
        reason: EndReason::Logout,
    };
    s.end_session(other.id, end).await.unwrap();
    s.touch_sessions(&[(other.id, at(mins(52)))]).await.unwrap();
    assert_eq!(
        s.get_session(other.id)
            .await
            .unwrap()
            .unwrap()
            .last_accessed_at,
        at(mins(50))
    );
    // Unknown ids and an empty batch are fine.
    s.touch_sessions(&[(SessionId::generate(), at(1))])
        .await
        .unwrap();
    s.touch_sessions(&[]).await.unwrap();
}

pub async fn end_session_once_and_at_the_true_deadline(f: Fixture) {
    let s = f.store.as_ref();
    let u = s.create_user(new_user("u")).await.unwrap();
    let a = session_at(s, &u, at(0)).await;
    let end = SessionEnd {
        at: at(mins(1)),
        reason: EndReason::Logout,
    };
    let ended = s.end_session(a.id, end).await.unwrap().unwrap();
    assert_eq!(ended.end, Some(end));
    assert!(s.end_session(a.id, end).await.unwrap().is_none());
    assert!(
        s.end_session(SessionId::generate(), end)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.get_session(a.id).await.unwrap().unwrap().end, Some(end));

    // Revoking a session that had already gone idle records the expiry instead.
    let b = session_at(s, &u, at(0)).await;
    let late = SessionEnd {
        at: at(mins(90)),
        reason: EndReason::Revoked,
    };
    let ended = s.end_session(b.id, late).await.unwrap().unwrap();
    assert_eq!(
        ended.end,
        Some(SessionEnd {
            at: at(mins(30)),
            reason: EndReason::Idle
        })
    );
}

pub async fn end_user_sessions_except_one(f: Fixture) {
    let s = f.store.as_ref();
    let u = s.create_user(new_user("u")).await.unwrap();
    let v = s.create_user(new_user("v")).await.unwrap();
    let keep = session_at(s, &u, at(0)).await;
    let a = session_at(s, &u, at(1)).await;
    let b = session_at(s, &u, at(2)).await;
    let other = session_at(s, &v, at(3)).await;
    let end = SessionEnd {
        at: at(mins(1)),
        reason: EndReason::Revoked,
    };
    let ended = s.end_user_sessions(u.id, end, Some(keep.id)).await.unwrap();
    let ids: HashSet<_> = ended.iter().map(|x| x.id).collect();
    assert_eq!(ids, HashSet::from([a.id, b.id]));
    assert!(ended.iter().all(|x| x.end == Some(end)));
    assert!(s.get_session(keep.id).await.unwrap().unwrap().end.is_none());
    assert!(
        s.get_session(other.id)
            .await
            .unwrap()
            .unwrap()
            .end
            .is_none()
    );
    assert!(
        s.end_user_sessions(u.id, end, Some(keep.id))
            .await
            .unwrap()
            .is_empty()
    );
    let all = s.end_user_sessions(u.id, end, None).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, keep.id);
}

pub async fn rotate_token(f: Fixture) {
    let s = f.store.as_ref();
    let u = s.create_user(new_user("u")).await.unwrap();
    let (n, old) = new_session(&u, at(0), 30 * MIN, 60 * MIN);
    let sess = s
        .create_session(n, SessionLimit::Unlimited)
        .await
        .unwrap()
        .session;
    let fresh = SessionToken::generate().unwrap();
    assert!(
        s.rotate_session_token(sess.id, &old.hash(), &fresh.hash())
            .await
            .unwrap()
    );
    assert!(
        s.find_session_by_token(&old.hash())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.find_session_by_token(&fresh.hash())
            .await
            .unwrap()
            .unwrap()
            .id,
        sess.id
    );
    // The old hash no longer matches.
    let third = SessionToken::generate().unwrap();
    assert!(
        !s.rotate_session_token(sess.id, &old.hash(), &third.hash())
            .await
            .unwrap()
    );
    // An ended session cannot be rotated.
    s.end_session(
        sess.id,
        SessionEnd {
            at: at(1),
            reason: EndReason::Logout,
        },
    )
    .await
    .unwrap();
    assert!(
        !s.rotate_session_token(sess.id, &fresh.hash(), &third.hash())
            .await
            .unwrap()
    );
}

pub async fn list_pages_filters_and_states(f: Fixture) {
    let s = f.store.as_ref();
    let u = s.create_user(new_user("u")).await.unwrap();
    let v = s.create_user(new_user("v")).await.unwrap();
    let mut mine = Vec::new();
    for i in 0..7 {
        mine.push(session_at(s, &u, at(i * 1000)).await);
    }
    // Two with the same creation instant: the id breaks the tie.
    mine.push(session_at(s, &u, at(7000)).await);
    mine.push(session_at(s, &u, at(7000)).await);
    let theirs = session_at(s, &v, at(500)).await;
    s.end_session(
        mine[0].id,
        SessionEnd {
            at: at(10),
            reason: EndReason::Logout,
        },
    )
    .await
    .unwrap();

    let now = at(mins(1));
    let mut expected: Vec<_> = mine.iter().map(|x| (x.created_at, x.id)).collect();
    expected.sort_by(|a, b| b.cmp(a));

    // Pages of 4, newest first, following the cursor.
    let mut seen = Vec::new();
    let mut q = query(Some(u.id), StateFilter::Any, now, 4);
    loop {
        let page = s.list_sessions(&q).await.unwrap();
        assert!(page.len() <= 4);
        seen.extend(page.iter().map(|x| (x.created_at, x.id)));
        match page.last() {
            Some(last) if page.len() == 4 => q.after = Some(SessionCursor::after(last)),
            _ => break,
        }
    }
    assert_eq!(seen, expected);
    assert!(!seen.iter().any(|(_, id)| *id == theirs.id));

    let live = s
        .list_sessions(&query(Some(u.id), StateFilter::Live, now, 100))
        .await
        .unwrap();
    assert_eq!(live.len(), 8);
    let ended = s
        .list_sessions(&query(Some(u.id), StateFilter::Ended, now, 100))
        .await
        .unwrap();
    assert_eq!(
        ended.iter().map(|x| x.id).collect::<Vec<_>>(),
        vec![mine[0].id]
    );
    // Expired but not yet recorded counts as ended at `now`.
    let later = at(mins(45));
    let ended = s
        .list_sessions(&query(Some(u.id), StateFilter::Ended, later, 100))
        .await
        .unwrap();
    assert_eq!(ended.len(), 9);
    assert!(
        s.list_sessions(&query(Some(u.id), StateFilter::Live, later, 100))
            .await
            .unwrap()
            .is_empty()
    );

    let everyone = s
        .list_sessions(&query(None, StateFilter::Any, now, 100))
        .await
        .unwrap();
    assert_eq!(everyone.len(), 10);
    let mut by_host = query(None, StateFilter::Any, now, 100);
    by_host.host = Some("10.0.0.1".into());
    assert_eq!(s.list_sessions(&by_host).await.unwrap().len(), 10);
    by_host.host = Some("10.9.9.9".into());
    assert!(s.list_sessions(&by_host).await.unwrap().is_empty());

    assert_eq!(s.count_live_sessions(Some(u.id), now).await.unwrap(), 8);
    assert_eq!(s.count_live_sessions(None, now).await.unwrap(), 9);
    assert_eq!(s.count_live_sessions(None, later).await.unwrap(), 0);
}

pub async fn sweep_records_idle_and_absolute_expiry(f: Fixture) {
    let s = f.store.as_ref();
    let u = s.create_user(new_user("u")).await.unwrap();
    // Idle after 30 min.
    let idle = session_at(s, &u, at(0)).await;
    // Absolute after 60 min, kept busy.
    let (n, _) = new_session(&u, at(0), 30 * MIN, 60 * MIN);
    let busy = s
        .create_session(n, SessionLimit::Unlimited)
        .await
        .unwrap()
        .session;
    s.touch_sessions(&[(busy.id, at(mins(29)))]).await.unwrap();
    s.touch_sessions(&[(busy.id, at(mins(58)))]).await.unwrap();
    let fresh = session_at(s, &u, at(mins(50))).await;

    assert!(
        s.end_expired_sessions(at(mins(29)), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let ended = s.end_expired_sessions(at(mins(61)), 100).await.unwrap();
    let by_id: std::collections::HashMap<_, _> = ended.iter().map(|x| (x.id, x.end)).collect();
    assert_eq!(by_id.len(), 2);
    assert_eq!(
        by_id[&idle.id],
        Some(SessionEnd {
            at: at(mins(30)),
            reason: EndReason::Idle
        })
    );
    assert_eq!(
        by_id[&busy.id],
        Some(SessionEnd {
            at: at(mins(60)),
            reason: EndReason::Absolute
        })
    );
    assert!(
        s.end_expired_sessions(at(mins(61)), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.get_session(fresh.id)
            .await
            .unwrap()
            .unwrap()
            .end
            .is_none()
    );
}

pub async fn sweep_batches_and_runs_concurrently_without_double_work(f: Fixture) {
    let s = f.store.clone();
    let u = s.create_user(new_user("u")).await.unwrap();
    let mut ids = HashSet::new();
    for i in 0..40 {
        ids.insert(session_at(s.as_ref(), &u, at(i)).await.id);
    }
    let now = at(mins(31));
    assert_eq!(s.end_expired_sessions(now, 5).await.unwrap().len(), 5);
    let (a, b) = tokio::join!(
        async {
            let mut got = Vec::new();
            loop {
                let batch = s.end_expired_sessions(now, 3).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|x| x.id));
            }
        },
        async {
            let mut got = Vec::new();
            loop {
                let batch = s.end_expired_sessions(now, 4).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|x| x.id));
            }
        }
    );
    let total = a.len() + b.len();
    let union: HashSet<_> = a.into_iter().chain(b).collect();
    assert_eq!(total, 35, "each session is ended exactly once");
    assert_eq!(union.len(), 35);
    assert_eq!(s.count_live_sessions(Some(u.id), at(0)).await.unwrap(), 0);
}

pub async fn purge_only_old_history(f: Fixture) {
    let s = f.store.as_ref();
    let u = s.create_user(new_user("u")).await.unwrap();
    let old = session_at(s, &u, at(0)).await;
    let recent = session_at(s, &u, at(0)).await;
    let live = session_at(s, &u, at(0)).await;
    s.end_session(
        old.id,
        SessionEnd {
            at: at(mins(1)),
            reason: EndReason::Logout,
        },
    )
    .await
    .unwrap();
    s.end_session(
        recent.id,
        SessionEnd {
            at: at(mins(10)),
            reason: EndReason::Logout,
        },
    )
    .await
    .unwrap();
    assert_eq!(s.purge_ended_sessions(at(mins(5)), 100).await.unwrap(), 1);
    assert!(s.get_session(old.id).await.unwrap().is_none());
    assert!(s.get_session(recent.id).await.unwrap().is_some());
    assert!(s.get_session(live.id).await.unwrap().is_some());
    let page = s
        .list_sessions(&query(Some(u.id), StateFilter::Any, at(mins(11)), 10))
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
}

pub async fn limits_deny_or_evict_oldest(f: Fixture) {
    let s = f.store.as_ref();
    let u = s.create_user(new_user("u")).await.unwrap();
    let first = session_at(s, &u, at(0)).await;
    let second = session_at(s, &u, at(1)).await;
    let (n, _) = new_session(&u, at(2), 30 * MIN, 60 * MIN);
    assert!(matches!(
        s.create_session(n, SessionLimit::Deny(2)).await,
        Err(StoreError::LimitReached)
    ));
    assert_eq!(s.count_live_sessions(Some(u.id), at(3)).await.unwrap(), 2);

    let (n, _) = new_session(&u, at(3), 30 * MIN, 60 * MIN);
    let created = s
        .create_session(n, SessionLimit::EvictOldest(2))
        .await
        .unwrap();
    assert_eq!(created.evicted.len(), 1);
    assert_eq!(created.evicted[0].id, first.id);
    assert_eq!(
        created.evicted[0].end,
        Some(SessionEnd {
            at: at(3),
            reason: EndReason::Evicted
        })
    );
    assert!(
        s.get_session(second.id)
            .await
            .unwrap()
            .unwrap()
            .end
            .is_none()
    );
    assert_eq!(s.count_live_sessions(Some(u.id), at(4)).await.unwrap(), 2);

    // Expired sessions do not count against the limit.
    let (n, _) = new_session(&u, at(mins(100)), 30 * MIN, 60 * MIN);
    let created = s.create_session(n, SessionLimit::Deny(1)).await.unwrap();
    assert!(created.evicted.is_empty());
}

/// A session created with its login's audit event: both are there, and a refused
/// session records no event.
pub async fn create_session_audited_records_both(f: Fixture) {
    let s = f.store.as_ref();
    let u = s.create_user(new_user("u")).await.unwrap();
    let who = UserRef {
        id: u.id,
        name: u.name.clone(),
    };
    let event = |sid| NewAuditEvent {
        at: at(1),
        kind: AuditKind::LoginSucceeded,
        actor: Some(who.clone()),
        subject: Some(who.clone()),
        session_id: Some(sid),
        source: "10.0.0.9".into(),
        dialect: Some(Dialect::Commvault),
        detail: "console=13".into(),
    };
    let (n, _) = new_session(&u, at(1), 30 * MIN, 60 * MIN);
    let sid = n.id;
    let created = s
        .create_session_audited(n, SessionLimit::Deny(1), event(sid))
        .await
        .unwrap();
    assert_eq!(created.session.id, sid);
    assert!(s.get_session(sid).await.unwrap().is_some());
    let (n, _) = new_session(&u, at(2), 30 * MIN, 60 * MIN);
    let refused = n.id;
    assert!(matches!(
        s.create_session_audited(n, SessionLimit::Deny(1), event(refused))
            .await,
        Err(StoreError::LimitReached)
    ));
    let events = s
        .query_audit(&AuditQuery {
            user: Some(u.id),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event.kind, AuditKind::LoginSucceeded);
    assert_eq!(events[0].event.session_id, Some(sid));
    assert_eq!(events[0].event.source, "10.0.0.9");
    assert_eq!(events[0].event.detail, "console=13");
}

pub async fn audit_append_query_purge(f: Fixture) {
    let s = f.store.as_ref();
    let alice = UserRef {
        id: UserId(1),
        name: "alice".into(),
    };
    let bob = UserRef {
        id: UserId(2),
        name: "bob".into(),
    };
    let sid = SessionId::generate();
    let ev = |t: i64, kind, actor: Option<UserRef>, subject: Option<UserRef>| NewAuditEvent {
        at: at(t),
        kind,
        actor,
        subject,
        session_id: Some(sid),
        source: "10.0.0.1".into(),
        dialect: Some(Dialect::Vsphere),
        detail: "x".into(),
    };
    s.append_audit(ev(
        1,
        AuditKind::LoginSucceeded,
        Some(alice.clone()),
        Some(alice.clone()),
    ))
    .await
    .unwrap();
    s.append_audit(ev(2, AuditKind::LoginFailed, None, Some(bob.clone())))
        .await
        .unwrap();
    s.append_audit(ev(
        3,
        AuditKind::SessionRevoked,
        Some(alice.clone()),
        Some(bob.clone()),
    ))
    .await
    .unwrap();
    s.append_audit(ev(
        4,
        AuditKind::Logout,
        Some(alice.clone()),
        Some(alice.clone()),
    ))
    .await
    .unwrap();

    let all = s
        .query_audit(&AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(
        all[3].event,
        ev(
            1,
            AuditKind::LoginSucceeded,
            Some(alice.clone()),
            Some(alice.clone())
        )
    );

    let bobs = s
        .query_audit(&AuditQuery {
            user: Some(bob.id),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        bobs.iter().map(|e| e.event.kind).collect::<Vec<_>>(),
        vec![AuditKind::SessionRevoked, AuditKind::LoginFailed]
    );
    let kinds = s
        .query_audit(&AuditQuery {
            kinds: vec![AuditKind::Logout, AuditKind::LoginFailed],
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(kinds.len(), 2);
    let window = s
        .query_audit(&AuditQuery {
            since: Some(at(2)),
            until: Some(at(4)),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        window.iter().map(|e| e.event.at).collect::<Vec<_>>(),
        vec![at(3), at(2)]
    );
    let page = s
        .query_audit(&AuditQuery {
            before_id: Some(all[1].id),
            limit: 1,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, all[2].id);

    assert_eq!(s.purge_audit(at(3)).await.unwrap(), 2);
    assert_eq!(
        s.query_audit(&AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
        .len(),
        2
    );
}

/// Several keys in one call: each key's record, in the order asked, `None` for the
/// unknown ones.
pub async fn login_failures_of_several_keys(f: Fixture) {
    let s = f.store.as_ref();
    let window = Duration::from_secs(600);
    assert!(s.login_failures_of(&[]).await.unwrap().is_empty());
    s.record_login_failure("addr:10.0.0.1", at(0), window)
        .await
        .unwrap();
    s.record_login_failure("user:bob", at(1), window)
        .await
        .unwrap();
    s.record_login_failure("user:bob", at(2), window)
        .await
        .unwrap();
    let got = s
        .login_failures_of(&["user:nobody", "user:bob", "addr:10.0.0.1"])
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert!(got[0].is_none());
    assert_eq!(got[1], s.login_failures("user:bob").await.unwrap());
    assert_eq!(got[1].unwrap().failures, 2);
    assert_eq!(got[2], s.login_failures("addr:10.0.0.1").await.unwrap());
    assert_eq!(got[2].unwrap().failures, 1);
}

pub async fn login_failure_counters(f: Fixture) {
    let s = f.store.as_ref();
    let key = "user:alice";
    let window = Duration::from_secs(600);
    assert!(s.login_failures(key).await.unwrap().is_none());
    let r = s.record_login_failure(key, at(0), window).await.unwrap();
    assert_eq!(
        (r.failures, r.window_start, r.locked_until, r.lockouts),
        (1, at(0), None, 0)
    );
    let r = s
        .record_login_failure(key, at(mins(5)), window)
        .await
        .unwrap();
    assert_eq!((r.failures, r.window_start), (2, at(0)));
    // The window has passed: counting restarts.
    let r = s
        .record_login_failure(key, at(mins(11)), window)
        .await
        .unwrap();
    assert_eq!((r.failures, r.window_start), (1, at(mins(11))));
    s.lock_login(key, at(mins(20))).await.unwrap();
    let r = s.login_failures(key).await.unwrap().unwrap();
    assert_eq!(
        (r.failures, r.locked_until, r.lockouts),
        (0, Some(at(mins(20))), 1)
    );
    s.lock_login(key, at(mins(40))).await.unwrap();
    assert_eq!(s.login_failures(key).await.unwrap().unwrap().lockouts, 2);
    assert!(s.login_failures("addr:10.0.0.1").await.unwrap().is_none());
    s.clear_login_failures(key).await.unwrap();
    assert!(s.login_failures(key).await.unwrap().is_none());
    // Concurrent failures are all counted.
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let store = f.store.clone();
            tokio::spawn(async move {
                store
                    .record_login_failure("addr:192.0.2.1", at(0), window)
                    .await
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    assert_eq!(
        s.login_failures("addr:192.0.2.1")
            .await
            .unwrap()
            .unwrap()
            .failures,
        10
    );
    s.ping().await.unwrap();
}

/// What the churn did: every session it made, as the store last reported it, and
/// the current token of each.
pub struct Churn {
    pub sessions: std::collections::HashMap<SessionId, sessiond::domain::Session>,
    pub tokens: std::collections::HashMap<SessionId, SessionToken>,
    pub users: Vec<User>,
}

impl Churn {
    fn record(&mut self, s: sessiond::domain::Session) {
        self.sessions.insert(s.id, s);
    }
}

/// Many sessions of several users (one deleted later) through every kind of
/// change: logout, touch, rotation, revocation of a user's sessions, eviction by the
/// limit, then expiry swept by two concurrent sweepers in small batches.
pub async fn churn(s: &Arc<dyn Store>) -> Churn {
    let mut c = Churn {
        sessions: Default::default(),
        tokens: Default::default(),
        users: Vec::new(),
    };
    for name in ["u0", "u1", "u2", "gone"] {
        c.users.push(s.create_user(new_user(name)).await.unwrap());
    }
    for i in 0..60i64 {
        let user = c.users[(i % 4) as usize].clone();
        let idle = if i % 2 == 0 { 30 * MIN } else { 10 * MIN };
        let (mut n, token) = new_session(&user, at(i * 1000), idle, 60 * MIN);
        n.client.host = format!("10.0.0.{}", i % 3);
        let created = s.create_session(n, SessionLimit::Unlimited).await.unwrap();
        c.tokens.insert(created.session.id, token);
        c.record(created.session);
    }
    let ids: Vec<SessionId> = {
        let mut v: Vec<_> = c.sessions.values().map(|x| (x.created_at, x.id)).collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    };
    for (i, id) in ids.iter().enumerate() {
        if i % 5 == 0 {
            s.touch_sessions(&[(*id, at(mins(8)))]).await.unwrap();
            c.record(s.get_session(*id).await.unwrap().unwrap());
        }
        if i % 7 == 0 {
            let end = SessionEnd {
                at: at(mins(5)),
                reason: EndReason::Logout,
            };
            if let Some(x) = s.end_session(*id, end).await.unwrap() {
                c.record(x);
            }
        }
        if i % 11 == 0 {
            let fresh = SessionToken::generate().unwrap();
            let old = c.tokens[id].hash();
            if s.rotate_session_token(*id, &old, &fresh.hash())
                .await
                .unwrap()
            {
                c.tokens.insert(*id, fresh);
            }
        }
    }
    let gone = c.users[3].clone();
    let end = SessionEnd {
        at: at(mins(6)),
        reason: EndReason::Revoked,
    };
    for x in s.end_user_sessions(gone.id, end, None).await.unwrap() {
        c.record(x);
    }
    assert!(s.delete_user(gone.id).await.unwrap());
    let u1 = c.users[1].clone();
    let (n, token) = new_session(&u1, at(mins(7)), 30 * MIN, 60 * MIN);
    let created = s
        .create_session(n, SessionLimit::EvictOldest(3))
        .await
        .unwrap();
    assert!(!created.evicted.is_empty());
    c.tokens.insert(created.session.id, token);
    c.record(created.session);
    for x in created.evicted {
        c.record(x);
    }
    let now = at(mins(35));
    let sweep = |store: Arc<dyn Store>| async move {
        let mut got = Vec::new();
        loop {
            let batch = store.end_expired_sessions(now, 3).await.unwrap();
            if batch.is_empty() {
                return got;
            }
            got.extend(batch);
        }
    };
    let (a, b) = tokio::join!(sweep(s.clone()), sweep(s.clone()));
    let mut seen = HashSet::new();
    for x in a.into_iter().chain(b) {
        assert!(seen.insert(x.id), "session {} swept twice", x.id);
        assert!(c.sessions[&x.id].end.is_none(), "swept an ended session");
        c.record(x);
    }
    c
}

/// Checks, through the trait only, that the store holds exactly the sessions in
/// `expected` and that every listing, count and lookup agrees with them.
pub async fn assert_store_matches(
    s: &dyn Store,
    c: &Churn,
    expected: &HashSet<SessionId>,
    now: Timestamp,
) {
    for (id, model) in &c.sessions {
        let got = s.get_session(*id).await.unwrap();
        let by_token = s.find_session_by_token(&c.tokens[id].hash()).await.unwrap();
        if expected.contains(id) {
            assert_eq!(got.as_ref(), Some(model), "session {id}");
            assert_eq!(by_token.as_ref(), Some(model), "session {id} by token");
        } else {
            assert!(got.is_none(), "purged session {id} still there");
            assert!(
                by_token.is_none(),
                "purged session {id} still found by token"
            );
        }
    }
    let listed = |q: SessionQuery| async move {
        let mut out = Vec::new();
        let mut q = q;
        loop {
            let page = s.list_sessions(&q).await.unwrap();
            out.extend(page.iter().map(|x| (x.created_at, x.id)));
            match page.last() {
                Some(last) if page.len() == q.limit => q.after = Some(SessionCursor::after(last)),
                _ => return out,
            }
        }
    };
    let remaining: Vec<_> = c
        .sessions
        .values()
        .filter(|x| expected.contains(&x.id))
        .collect();
    let newest_first = |mut v: Vec<(Timestamp, SessionId)>| {
        v.sort_by(|a, b| b.cmp(a));
        v
    };
    let all = listed(query(None, StateFilter::Any, now, 4)).await;
    assert_eq!(
        all,
        newest_first(remaining.iter().map(|x| (x.created_at, x.id)).collect())
    );
    for user in &c.users {
        for state in [StateFilter::Any, StateFilter::Live, StateFilter::Ended] {
            let want: Vec<_> = remaining
                .iter()
                .filter(|x| x.user_id == user.id)
                .filter(|x| match state {
                    StateFilter::Any => true,
                    StateFilter::Live => x.is_live_at(now),
                    StateFilter::Ended => !x.is_live_at(now),
                })
                .map(|x| (x.created_at, x.id))
                .collect();
            let got = listed(query(Some(user.id), state, now, 3)).await;
            assert_eq!(
                got,
                newest_first(want.clone()),
                "user {} {state:?}",
                user.name
            );
            if state == StateFilter::Live {
                assert_eq!(
                    s.count_live_sessions(Some(user.id), now).await.unwrap(),
                    want.len() as u64
                );
            }
        }
    }
    for host in ["10.0.0.0", "10.0.0.1", "10.0.0.2"] {
        let mut q = query(None, StateFilter::Any, now, 5);
        q.host = Some(host.into());
        let want: Vec<_> = remaining
            .iter()
            .filter(|x| x.client.host == host)
            .map(|x| (x.created_at, x.id))
            .collect();
        assert_eq!(listed(q).await, newest_first(want), "host {host}");
    }
    let live = remaining.iter().filter(|x| x.is_live_at(now)).count();
    assert_eq!(s.count_live_sessions(None, now).await.unwrap(), live as u64);
}

pub async fn history_stays_consistent_through_sweep_and_purge(f: Fixture) {
    let s = f.store.clone();
    let c = churn(&s).await;
    let mut expected: HashSet<_> = c.sessions.keys().copied().collect();
    assert_store_matches(s.as_ref(), &c, &expected, at(mins(35))).await;
    // Purge in small batches what ended before +20 min.
    let horizon = at(mins(20));
    let mut purged = 0;
    loop {
        let n = s.purge_ended_sessions(horizon, 4).await.unwrap();
        purged += n;
        if n == 0 {
            break;
        }
    }
    expected.retain(|id| c.sessions[id].end.is_none_or(|e| e.at >= horizon));
    assert!(purged > 10 && !expected.is_empty(), "purged {purged}");
    assert_eq!(purged as usize, c.sessions.len() - expected.len());
    assert_store_matches(s.as_ref(), &c, &expected, at(mins(35))).await;
    // Everything expires; everything is purged; nothing is left behind.
    let mut c = c;
    for x in s.end_expired_sessions(at(mins(200)), 1000).await.unwrap() {
        c.record(x);
    }
    assert!(c.sessions.values().all(|x| x.end.is_some()));
    while s.purge_ended_sessions(at(mins(300)), 7).await.unwrap() > 0 {}
    assert_store_matches(s.as_ref(), &c, &HashSet::new(), at(mins(300))).await;
}

/// Generates the suite for one backend: `conformance!(name, fixture_fn)`.
macro_rules! conformance {
    ($backend:ident, $fixture:path) => {
        mod $backend {
            use super::*;
            conformance!(@tests $fixture;
                users_crud,
                session_create_find_and_browser_ids,
                touch_raises_last_access_within_life,
                end_session_once_and_at_the_true_deadline,
                end_user_sessions_except_one,
                rotate_token,
                list_pages_filters_and_states,
                sweep_records_idle_and_absolute_expiry,
                sweep_batches_and_runs_concurrently_without_double_work,
                purge_only_old_history,
                limits_deny_or_evict_oldest,
                audit_append_query_purge,
                create_session_audited_records_both,
                login_failures_of_several_keys,
                login_failure_counters,
                history_stays_consistent_through_sweep_and_purge,
            );
        }
    };
    (@tests $fixture:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($fixture().await).await;
            }
        )*
    };
}

conformance!(sqlite, sqlite_fixture);
conformance!(postgres, postgres_fixture);
conformance!(redis, redis_fixture);

/// Redis keeps its indexes by hand: after the churn, a purge, and a purge of
/// everything, every index entry names an existing session (with the right score)
/// and every session is in exactly the indexes its state calls for. No key has a TTL.
mod redis_indexes {
    use super::*;
    use crate::support::backends::TestRedisPrefix;
    use ::redis::AsyncCommands;
    use std::collections::HashMap;

    type Hash = HashMap<String, String>;

    async fn check(p: &TestRedisPrefix) -> usize {
        let mut conn = p.connection().await;
        let pre = &p.prefix;
        let keys = p.keys().await;
        let mut sessions: HashMap<String, Hash> = HashMap::new();
        for k in &keys {
            let ttl: i64 = conn.ttl(k).await.unwrap();
            assert_eq!(ttl, -1, "{k} has a TTL");
            if let Some(id) = k.strip_prefix(&format!("{pre}session:")) {
                let h: Hash = conn.hgetall(k).await.unwrap();
                sessions.insert(id.to_string(), h);
            }
        }
        let zconn = conn.clone();
        let score = |key: String, id: String| {
            let mut conn = zconn.clone();
            async move {
                let s: Option<f64> = conn.zscore(&key, &id).await.unwrap();
                s.map(|s| s as i64)
            }
        };
        for (id, h) in &sessions {
            let num = |f: &str| h[f].parse::<i64>().unwrap();
            let (uid, created) = (&h["user_id"], Some(num("created_at")));
            assert_eq!(
                score(format!("{pre}sessions:by-created"), id.clone()).await,
                created
            );
            assert_eq!(
                score(format!("{pre}sessions:by-user:{uid}"), id.clone()).await,
                created
            );
            let by_host = format!("{pre}sessions:by-host:{}", h["host"]);
            assert_eq!(score(by_host, id.clone()).await, created);
            let owner: Option<String> = conn
                .get(format!("{pre}token:{}", h["token_hash"]))
                .await
                .unwrap();
            assert_eq!(owner.as_ref(), Some(id), "token of {id}");
            let live = score(format!("{pre}sessions:live"), id.clone()).await;
            let live_u = score(format!("{pre}sessions:live-by-user:{uid}"), id.clone()).await;
            let ended = score(format!("{pre}sessions:ended"), id.clone()).await;
            if h.contains_key("ended_at") {
                assert_eq!(
                    (live, live_u),
                    (None, None),
                    "ended {id} still indexed as live"
                );
                assert_eq!(ended, Some(num("ended_at")), "ended {id}");
            } else {
                let deadline = Some(num("deadline_at"));
                assert_eq!((live, live_u), (deadline, deadline), "live {id}");
                assert_eq!(ended, None, "live {id} indexed as ended");
            }
        }
        // And the other way: every entry of every index names an existing session
        // that belongs there.
        for k in &keys {
            let Some(rest) = k.strip_prefix(&format!("{pre}sessions:")) else {
                if let Some(hash) = k.strip_prefix(&format!("{pre}token:")) {
                    let id: String = conn.get(k).await.unwrap();
                    let h = sessions
                        .get(&id)
                        .unwrap_or_else(|| panic!("{k} names no session"));
                    assert_eq!(
                        h["token_hash"], hash,
                        "{k} names a session with another token"
                    );
                }
                continue;
            };
            let members: Vec<String> = conn.zrange(k, 0, -1).await.unwrap();
            for id in members {
                let h = sessions
                    .get(&id)
                    .unwrap_or_else(|| panic!("{k} holds {id}, which does not exist"));
                if let Some(uid) = rest
                    .strip_prefix("by-user:")
                    .or_else(|| rest.strip_prefix("live-by-user:"))
                {
                    assert_eq!(h["user_id"], uid, "{k} holds another user's {id}");
                }
                if let Some(host) = rest.strip_prefix("by-host:") {
                    assert_eq!(h["host"], host, "{k} holds {id} of another host");
                }
            }
        }
        sessions.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn indexes_match_sessions_through_sweep_and_purge() {
        let p = TestRedisPrefix::create().await;
        let s = sessiond::store::open_with(&p.url(), &test_store_options(&p.prefix))
            .await
            .unwrap();
        let c = churn(&s).await;
        assert_eq!(check(&p).await, c.sessions.len());
        while s.purge_ended_sessions(at(mins(20)), 4).await.unwrap() > 0 {}
        let left = check(&p).await;
        assert!(left > 0 && left < c.sessions.len(), "{left} left");
        s.end_expired_sessions(at(mins(200)), 1000).await.unwrap();
        check(&p).await;
        while s.purge_ended_sessions(at(mins(300)), 7).await.unwrap() > 0 {}
        assert_eq!(check(&p).await, 0);
        let keys = p.keys().await;
        assert!(
            keys.iter()
                .all(|k| !k.contains(":session") && !k.contains(":token:")),
            "left behind: {keys:?}"
        );
        // Users and their name index agree too (the deleted one is gone from both).
        let mut conn = p.connection().await;
        let ids: Vec<String> = conn
            .zrange(format!("{}users", p.prefix), 0, -1)
            .await
            .unwrap();
        assert_eq!(ids.len(), 3);
        for id in ids {
            let name: String = conn
                .hget(format!("{}user:{id}", p.prefix), "name_key")
                .await
                .unwrap();
            let owner: String = conn
                .get(format!("{}user-name:{name}", p.prefix))
                .await
                .unwrap();
            assert_eq!(owner, id);
        }
        assert!(!keys.iter().any(|k| k.ends_with("user-name:gone")));
    }
}
