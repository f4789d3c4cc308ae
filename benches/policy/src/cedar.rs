//! The shape as cedar policies, the entities they need, and requests.
//!
//! Mapping: a machine is `Machine::"m0042"`, a child of its `Role::"role07"`
//! entities and of its `Env::"prod"`; a request's method is its action
//! (`Action::"GET"`), its host its resource (`Host::"api1.v1.com"`, or the
//! IP literal). The context carries what cedar's scope cannot: `host` (for
//! `like "*.suffix"`), `port`, `data` (the classes found) and, for an IP
//! literal, `ip`. Cedar's own precedence (forbid wins over permit, deny by
//! default) is veto's for the rules the shape has.

use crate::{Dest, ENVS, Effect, From, Req, Shape, list, quoted, role_name};
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityUid, PolicySet, Request,
    RestrictedExpression,
};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::str::FromStr;

fn uid(kind: &str, id: &str) -> String {
    format!("{kind}::{}", quoted(id))
}

/// The shape as one cedar policy text, one policy per rule, in rule order.
pub fn policies(shape: &Shape) -> String {
    let mut s = String::with_capacity(shape.rules.len() * 200);
    for r in &shape.rules {
        let effect = match r.effect {
            Effect::Allow => "permit",
            Effect::Deny => "forbid",
        };
        let principal = match &r.from {
            From::Machine(m) => {
                format!("principal == {}", uid("Machine", &shape.machines[*m].name))
            }
            From::Role(role) => format!("principal in {}", uid("Role", &role_name(*role))),
            From::Env(e) => format!("principal in {}", uid("Env", ENVS[*e])),
            From::Anyone => "principal".to_string(),
        };
        let action = match &r.methods {
            Some(m) => format!("action in {}", list(m, |m| uid("Action", m))),
            None => "action".to_string(),
        };
        let mut when: Vec<String> = Vec::new();
        let resource = match &r.dest {
            Dest::Host(h) => format!("resource == {}", uid("Host", h)),
            Dest::Suffix(sfx) => {
                when.push(format!("context.host like {}", quoted(&format!("*.{sfx}"))));
                "resource".to_string()
            }
            Dest::Cidr(net, len) => {
                when.push(format!(
                    "context has ip && context.ip.isInRange(ip(\"{net}/{len}\"))"
                ));
                "resource".to_string()
            }
        };
        match r.ports.as_deref() {
            Some([p]) => when.push(format!("context.port == {p}")),
            Some(ps) => when.push(format!(
                "{}.contains(context.port)",
                list(ps, u16::to_string)
            )),
            None => {}
        }
        if let Some(d) = &r.data {
            when.push(format!(
                "context.data.containsAny({})",
                list(d, |c| quoted(c))
            ));
        }
        let _ = write!(
            s,
            "@id({})\n{effect} (\n  {principal},\n  {action},\n  {resource}\n)",
            quoted(&r.id)
        );
        if !when.is_empty() {
            let _ = write!(s, "\nwhen {{ {} }}", when.join(" && "));
        }
        s.push_str(";\n\n");
    }
    s
}

fn parse_uid(s: &str) -> Result<EntityUid, String> {
    EntityUid::from_str(s).map_err(|e| format!("{s}: {e}"))
}

/// Every machine with its roles and env as parents. Roles and envs need no
/// entity of their own: `in` follows the machine's parents.
pub fn entities(shape: &Shape) -> Result<Entities, String> {
    let mut out = Vec::with_capacity(shape.machines.len());
    for m in &shape.machines {
        let mut parents = HashSet::new();
        for r in &m.roles {
            parents.insert(parse_uid(&uid("Role", &role_name(*r)))?);
        }
        parents.insert(parse_uid(&uid("Env", ENVS[m.env]))?);
        out.push(Entity::new_no_attrs(
            parse_uid(&uid("Machine", &m.name))?,
            parents,
        ));
    }
    Entities::from_entities(out, None).map_err(|e| e.to_string())
}

/// The cedar side of one policy: what `Authorizer::is_authorized` needs.
pub struct Cedar {
    policies: PolicySet,
    entities: Entities,
    authorizer: Authorizer,
}

impl Cedar {
    pub fn new(shape: &Shape) -> Result<Cedar, String> {
        Ok(Cedar {
            policies: PolicySet::from_str(&policies(shape)).map_err(|e| e.to_string())?,
            entities: entities(shape)?,
            authorizer: Authorizer::new(),
        })
    }

    pub fn policy_count(&self) -> usize {
        self.policies.policies().count()
    }

    /// The cedar request for `r`. Not timed in the benchmark: building one
    /// costs about 10 µs, more than a veto decision.
    pub fn request(&self, r: &Req) -> Result<Request, String> {
        let mut ctx = vec![
            (
                "host".to_string(),
                RestrictedExpression::new_string(r.host.clone()),
            ),
            (
                "port".to_string(),
                RestrictedExpression::new_long(i64::from(r.port)),
            ),
            (
                "data".to_string(),
                RestrictedExpression::new_set(
                    r.data
                        .iter()
                        .map(|c| RestrictedExpression::new_string(c.to_string())),
                ),
            ),
        ];
        if let Some(ip) = r.ip {
            ctx.push((
                "ip".to_string(),
                RestrictedExpression::new_ip(ip.to_string()),
            ));
        }
        let context = Context::from_pairs(ctx).map_err(|e| e.to_string())?;
        Request::new(
            parse_uid(&uid("Machine", &r.machine))?,
            parse_uid(&uid("Action", r.method))?,
            parse_uid(&uid("Host", &r.host))?,
            context,
            None,
        )
        .map_err(|e| e.to_string())
    }

    /// One decision: the timed part.
    pub fn allows(&self, req: &Request) -> bool {
        self.authorizer
            .is_authorized(req, &self.policies, &self.entities)
            .decision()
            == Decision::Allow
    }
}
