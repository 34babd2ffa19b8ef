//! Grant evaluation against a small reference model: random interleavings of tenant creation and
//! deletion, grants, revocations (one, by scope), one-shot tickets, exchanges, session revocation
//! and the passing of time, run on the real SQLite store with an explicit clock. After every step
//! the store's answer (success or error code) and the effective state of every grant and session
//! must equal the model's.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::collections::HashMap;

use grantfs::api::{GrantState, SessionState};
use grantfs::{
    ErrorCode, GrantId, Handle, Mode, RuntimeId, SessionId, TenantSlug, Timestamp, WorkspaceName,
    WorkspaceRef,
};
use grantfs_control::store::sqlite::SqliteStore;
use grantfs_control::store::{
    Actor, GrantQuery, NewGrant, RevokeScope, SessionQuery, Store, StoreError, TicketRequest,
};
use proptest::prelude::*;

const TENANTS: [&str; 2] = ["t0", "t1"];
const RUNTIMES: [&str; 3] = ["r0", "r1", "r2"];
const T0: i64 = 1_800_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    CreateTenant(usize),
    DeleteTenant(usize),
    Grant {
        tenant: usize,
        runtime: Option<usize>,
        rw: bool,
        ttl: Option<u64>,
    },
    RevokeGrant(usize),
    RevokeScope {
        tenant: usize,
        runtime: Option<usize>,
    },
    Ticket {
        tenant: usize,
        runtime: usize,
        rw: bool,
        ttl: u64,
    },
    Exchange(usize),
    RevokeSession(usize),
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0..TENANTS.len();
    let r = 0..RUNTIMES.len();
    prop_oneof![
        1 => t.clone().prop_map(Op::CreateTenant),
        1 => t.clone().prop_map(Op::DeleteTenant),
        3 => (t.clone(), proptest::option::of(r.clone()), any::<bool>(), proptest::option::of(1u64..8))
            .prop_map(|(tenant, runtime, rw, ttl)| Op::Grant { tenant, runtime, rw, ttl }),
        2 => (0usize..16).prop_map(Op::RevokeGrant),
        1 => (t.clone(), proptest::option::of(r.clone())).prop_map(|(tenant, runtime)| Op::RevokeScope { tenant, runtime }),
        5 => (t, r, any::<bool>(), 1u64..8).prop_map(|(tenant, runtime, rw, ttl)| Op::Ticket { tenant, runtime, rw, ttl }),
        3 => (0usize..24).prop_map(Op::Exchange),
        1 => (0usize..24).prop_map(Op::RevokeSession),
        3 => (0i64..4000).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone)]
struct MGrant {
    id: GrantId,
    tenant: u64,
    runtime: Option<usize>,
    mode: Mode,
    expires: Option<i64>,
    revoked: bool,
    auto: bool,
    created: i64,
    seq: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Issued,
    Active,
    Revoked,
}

#[derive(Debug, Clone)]
struct MSession {
    id: SessionId,
    grant: GrantId,
    tenant: u64,
    runtime: usize,
    expires: i64,
    state: Stored,
}

#[derive(Default)]
struct Model {
    now: i64,
    /// Live tenant instance per slug index; instances are numbered so a re-created slug differs.
    live: [Option<u64>; 2],
    next_instance: u64,
    grants: Vec<MGrant>,
    sessions: Vec<MSession>,
}

impl Model {
    fn grant_live(&self, g: &MGrant) -> bool {
        !g.revoked && g.expires.is_none_or(|e| e > self.now)
    }
    fn grant_state(&self, g: &MGrant) -> GrantState {
        if g.revoked {
            GrantState::Revoked
        } else if g.expires.is_some_and(|e| e <= self.now) {
            GrantState::Expired
        } else {
            GrantState::Active
        }
    }
    fn session_state(&self, s: &MSession) -> SessionState {
        match s.state {
            Stored::Revoked => SessionState::Revoked,
            _ if s.expires <= self.now => SessionState::Expired,
            Stored::Issued => SessionState::Issued,
            Stored::Active => SessionState::Active,
        }
    }
    fn session_live(&self, s: &MSession) -> bool {
        s.state != Stored::Revoked && s.expires > self.now
    }
    fn revoke_sessions(&mut self, pred: impl Fn(&MSession) -> bool) {
        let now = self.now;
        for s in &mut self.sessions {
            if s.state != Stored::Revoked && s.expires > now && pred(s) {
                s.state = Stored::Revoked;
            }
        }
    }
    fn revoke_grants(&mut self, pred: impl Fn(&MGrant) -> bool) -> Vec<GrantId> {
        let now = self.now;
        let mut out = Vec::new();
        for g in &mut self.grants {
            if !g.revoked && g.expires.is_none_or(|e| e > now) && pred(g) {
                g.revoked = true;
                out.push(g.id.clone());
            }
        }
        out
    }
}

fn code(r: Result<impl Sized, StoreError>) -> Result<(), ErrorCode> {
    match r {
        Ok(_) => Ok(()),
        Err(StoreError::Refused { code, .. }) => Err(code),
        Err(e @ (StoreError::Backend(_) | StoreError::Unavailable(_))) => {
            panic!("store fault: {e}")
        }
    }
}

fn run(ops: Vec<Op>) {
    let store = SqliteStore::in_memory().unwrap();
    let admin = Handle::parse("admin").unwrap();
    let actor = Actor {
        account: admin.clone(),
        key_id: "key_model".into(),
    };
    let ws = WorkspaceRef {
        handle: admin.clone(),
        name: WorkspaceName::parse("ws").unwrap(),
    };
    store
        .create_workspace(&actor, &ws.name, Timestamp::from_millis(T0))
        .unwrap();
    let mut m = Model {
        now: T0,
        ..Model::default()
    };
    let slug = |i: usize| TenantSlug::parse(TENANTS[i]).unwrap();
    let rt = |i: usize| RuntimeId::parse(RUNTIMES[i]).unwrap();
    let mode = |rw: bool| if rw { Mode::Rw } else { Mode::Ro };

    for (step, op) in ops.into_iter().enumerate() {
        let now = Timestamp::from_millis(m.now);
        match op.clone() {
            Op::Advance(ms) => m.now += ms,
            Op::CreateTenant(t) => {
                let got =
                    code(store.create_tenant(&actor, &slug(t), None, serde_json::json!({}), now));
                let want = if m.live[t].is_some() {
                    Err(ErrorCode::TenantExists)
                } else {
                    Ok(())
                };
                assert_eq!(got, want, "step {step}: {op:?}");
                if want.is_ok() {
                    m.next_instance += 1;
                    m.live[t] = Some(m.next_instance);
                }
            }
            Op::DeleteTenant(t) => {
                let got = code(store.delete_tenant(&actor, &slug(t), now));
                match m.live[t] {
                    None => assert_eq!(got, Err(ErrorCode::TenantNotFound), "step {step}"),
                    Some(inst) => {
                        assert_eq!(got, Ok(()), "step {step}");
                        m.revoke_grants(|g| g.tenant == inst);
                        m.revoke_sessions(|s| s.tenant == inst);
                        m.live[t] = None;
                    }
                }
            }
            Op::Grant {
                tenant,
                runtime,
                rw,
                ttl,
            } => {
                let g = NewGrant {
                    workspace: ws.clone(),
                    tenant: slug(tenant),
                    runtime: runtime.map(rt),
                    mode: mode(rw),
                    ttl_secs: ttl,
                };
                let got = store.create_grant(&actor, &g, now);
                match m.live[tenant] {
                    None => assert_eq!(code(got), Err(ErrorCode::TenantNotFound), "step {step}"),
                    Some(inst) => {
                        let got = got.unwrap();
                        let seq = m.grants.len();
                        m.grants.push(MGrant {
                            id: got.id,
                            tenant: inst,
                            runtime,
                            mode: mode(rw),
                            expires: ttl.map(|t| m.now + t as i64 * 1000),
                            revoked: false,
                            auto: false,
                            created: m.now,
                            seq,
                        });
                    }
                }
            }
            Op::RevokeGrant(i) => {
                let Some(g) = m.grants.get(i).cloned() else {
                    continue;
                };
                code(store.revoke_grant(&actor, &g.id, now)).unwrap();
                m.revoke_grants(|x| x.id == g.id);
                m.revoke_sessions(|s| s.grant == g.id);
                // An expired grant is marked revoked too.
                m.grants[i].revoked = true;
            }
            Op::RevokeScope { tenant, runtime } => {
                let scope = RevokeScope {
                    tenant: slug(tenant),
                    runtime: runtime.map(rt),
                    workspace: None,
                };
                let got = code(store.revoke_grants(&actor, &scope, now));
                match m.live[tenant] {
                    None => assert_eq!(got, Err(ErrorCode::TenantNotFound), "step {step}"),
                    Some(inst) => {
                        assert_eq!(got, Ok(()), "step {step}");
                        match runtime {
                            Some(r) => {
                                m.revoke_grants(|g| g.tenant == inst && g.runtime == Some(r));
                                m.revoke_sessions(|s| s.tenant == inst && s.runtime == r);
                            }
                            None => {
                                m.revoke_grants(|g| g.tenant == inst);
                                m.revoke_sessions(|s| s.tenant == inst);
                            }
                        }
                    }
                }
            }
            Op::Ticket {
                tenant,
                runtime,
                rw,
                ttl,
            } => {
                let sid = SessionId::generate();
                let t = TicketRequest {
                    session_id: sid.clone(),
                    tenant: slug(tenant),
                    runtime: rt(runtime),
                    workspace: ws.clone(),
                    mode: mode(rw),
                    ttl_secs: ttl,
                    kid: "k".into(),
                };
                let got = store.issue_session(&actor, &t, now);
                // Model: tenant created if missing.
                let inst = match m.live[tenant] {
                    Some(i) => i,
                    None => {
                        m.next_instance += 1;
                        m.live[tenant] = Some(m.next_instance);
                        m.next_instance
                    }
                };
                let pick = |scope: Option<usize>| {
                    m.grants
                        .iter()
                        .filter(|g| g.tenant == inst && g.runtime == scope && m.grant_live(g))
                        .max_by_key(|g| (g.created, g.seq))
                        .map(|g| g.seq)
                };
                let picked = pick(Some(runtime)).or_else(|| pick(None));
                let wanted_until = m.now + ttl as i64 * 1000;
                let gseq = match picked {
                    Some(seq) => {
                        if !m.grants[seq].mode.allows(mode(rw)) {
                            assert_eq!(
                                code(got),
                                Err(ErrorCode::GrantModeInsufficient),
                                "step {step}"
                            );
                            continue;
                        }
                        let g = &mut m.grants[seq];
                        if g.auto && g.expires.is_some_and(|e| e < wanted_until) {
                            g.expires = Some(wanted_until);
                        }
                        seq
                    }
                    None => {
                        let seq = m.grants.len();
                        let (_, gr) = got.as_ref().expect("ticket with a new grant");
                        m.grants.push(MGrant {
                            id: gr.id.clone(),
                            tenant: inst,
                            runtime: Some(runtime),
                            mode: mode(rw),
                            expires: Some(wanted_until),
                            revoked: false,
                            auto: true,
                            created: m.now,
                            seq,
                        });
                        seq
                    }
                };
                let (s, gr) = got.unwrap_or_else(|e| panic!("step {step}: {op:?} refused: {e}"));
                let g = &m.grants[gseq];
                assert_eq!(gr.id, g.id, "step {step}: picked grant");
                let until = g.expires.map_or(wanted_until, |e| e.min(wanted_until));
                let expires = until;
                assert_eq!(
                    s.expires_at.millis(),
                    expires,
                    "step {step}: session expiry"
                );
                assert_eq!(s.mode, mode(rw));
                m.sessions.push(MSession {
                    id: sid,
                    grant: g.id.clone(),
                    tenant: inst,
                    runtime,
                    expires,
                    state: Stored::Issued,
                });
            }
            Op::Exchange(i) => {
                let Some(s) = m.sessions.get(i).cloned() else {
                    continue;
                };
                let got = code(store.exchange(&s.id, &[7u8; 32], now));
                let want = match m.session_state(&s) {
                    SessionState::Issued => Ok(()),
                    SessionState::Active | SessionState::Ended => Err(ErrorCode::TicketAlreadyUsed),
                    SessionState::Revoked => Err(ErrorCode::SessionRevoked),
                    SessionState::Expired => Err(ErrorCode::SessionExpired),
                };
                assert_eq!(got, want, "step {step}: {op:?}");
                if want.is_ok() {
                    m.sessions[i].state = Stored::Active;
                }
            }
            Op::RevokeSession(i) => {
                let Some(s) = m.sessions.get(i).cloned() else {
                    continue;
                };
                code(store.revoke_session(&actor, &s.id, now)).unwrap();
                if m.session_live(&s) {
                    m.sessions[i].state = Stored::Revoked;
                }
            }
        }
        // Every grant and session, as the store reports it now, equals the model.
        let now = Timestamp::from_millis(m.now);
        let grants: HashMap<GrantId, GrantState> = store
            .list_grants(
                &admin,
                &GrantQuery {
                    include_inactive: true,
                    ..GrantQuery::default()
                },
                now,
            )
            .unwrap()
            .into_iter()
            .map(|g| (g.id, g.state))
            .collect();
        assert_eq!(grants.len(), m.grants.len(), "step {step}: grant count");
        for g in &m.grants {
            assert_eq!(
                grants.get(&g.id),
                Some(&m.grant_state(g)),
                "step {step}: grant {:?}",
                g
            );
        }
        let sessions: HashMap<SessionId, SessionState> = store
            .list_sessions(&admin, &SessionQuery::default(), now)
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.state))
            .collect();
        assert_eq!(
            sessions.len(),
            m.sessions.len(),
            "step {step}: session count"
        );
        for s in &m.sessions {
            assert_eq!(
                sessions.get(&s.id),
                Some(&m.session_state(s)),
                "step {step}: session {:?}",
                s
            );
        }
    }
}

proptest! {
#![proptest_config(ProptestConfig {
        // 200 in scripts/test.sh; scripts/long.sh sets PROPTEST_CASES higher.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200),
        ..ProptestConfig::default()
    })]
    #[test]
    fn store_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
