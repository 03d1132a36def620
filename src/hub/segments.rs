//! Segments: named sets of visitors defined by conditions on their profiles, and who is in
//! each now.
//!
//! Pure: the definitions as the API gives them ([`SegmentSpec::parse`], the one validation,
//! also used to read a definition back from the log or the shared stream), their
//! evaluation against a visitor ([`SegmentSpec::holds`]) and the membership table
//! ([`Segments`]). The table is changed only by the state's fold (a definition by a logged
//! `AdminOp`, a membership by a `segment:entered` or `segment:left` event); the sequencer
//! asks it which memberships a profile change moves ([`Segments::moves`]) and commits
//! those events.
//!
//! Every field a condition may read is named in one table, [`field_of`], with the kind of
//! value it holds; the kind decides the operators and values allowed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Value};

use crate::clock::Millis;
use crate::error::HubError;
use crate::hub::state::Visitor;
use crate::ids::{SegmentId, VisitorId};

/// Segments a hub holds at most: each profile change is evaluated against all of them.
pub const MAX_SEGMENTS: usize = 1000;
/// Conditions one segment holds at most.
pub const MAX_CONDITIONS: usize = 20;
/// The longest segment name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest text a condition compares with, in characters.
pub const MAX_VALUE_CHARS: usize = 1024;
/// Values an `in` condition lists at most.
pub const MAX_IN_VALUES: usize = 100;
/// The traits the visitor view shows under their own names rather than in `attributes`.
const CONTACT_TRAITS: [&str; 4] = ["name", "email", "phone", "avatarUrl"];

/// What a field holds, which decides the operators and values it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    /// A text from a fixed list (`identity.state`).
    Choice(&'static [&'static str]),
    Bool,
    Count,
    Time,
    /// An attribute: whatever JSON the site put there.
    Any,
}

/// A field a condition reads, resolved from its name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Field {
    Attribute(String),
    Channel(String),
    UserId,
    Identified,
    IdentityState,
    Contact(&'static str),
    SessionCount,
    ConversationCount,
    FirstSeenAt,
    LastSeenAt,
    BrowserName,
    OsName,
    LocationCountry,
    LocationTimezone,
    /// The visitor's company: its id, its name, one of its attributes. A company is
    /// shared, so a change to its name or attributes moves every member's memberships
    /// (the sequencer evaluates them all again, `Txn::touch_company`).
    CompanyId,
    CompanyName,
    CompanyAttribute(String),
}

impl Field {
    fn of_company(&self) -> bool {
        matches!(
            self,
            Field::CompanyId | Field::CompanyName | Field::CompanyAttribute(_)
        )
    }
}

/// The field table: a field's name to what it is and holds. A new field is one more arm
/// here and in [`Field::read`].
fn field_of(name: &str) -> Result<(Field, Kind), String> {
    const IDENTITY_STATES: &[&str] = &["anonymous", "recognized", "authenticated"];
    let fixed = match name {
        "userId" => Some((Field::UserId, Kind::Text)),
        "identified" => Some((Field::Identified, Kind::Bool)),
        "identity.state" => Some((Field::IdentityState, Kind::Choice(IDENTITY_STATES))),
        "name" => Some((Field::Contact("name"), Kind::Text)),
        "email" => Some((Field::Contact("email"), Kind::Text)),
        "phone" => Some((Field::Contact("phone"), Kind::Text)),
        "sessionCount" => Some((Field::SessionCount, Kind::Count)),
        "conversationCount" => Some((Field::ConversationCount, Kind::Count)),
        "firstSeenAt" => Some((Field::FirstSeenAt, Kind::Time)),
        "lastSeenAt" => Some((Field::LastSeenAt, Kind::Time)),
        "browser.name" => Some((Field::BrowserName, Kind::Text)),
        "os.name" => Some((Field::OsName, Kind::Text)),
        "location.country" => Some((Field::LocationCountry, Kind::Text)),
        "location.timezone" => Some((Field::LocationTimezone, Kind::Text)),
        "company.id" => Some((Field::CompanyId, Kind::Text)),
        "company.name" => Some((Field::CompanyName, Kind::Text)),
        _ => None,
    };
    if let Some(found) = fixed {
        return Ok(found);
    }
    let keyed = |prefix: &str| {
        name.strip_prefix(prefix)
            .filter(|key| !key.is_empty())
            .map(str::to_owned)
    };
    if let Some(key) = keyed("attributes.") {
        if CONTACT_TRAITS.contains(&key.as_str()) {
            return Err(format!(
                "`{key}` is a field of its own, not an attribute: use the field `{key}`"
            ));
        }
        return Ok((Field::Attribute(key), Kind::Any));
    }
    if let Some(key) = keyed("channels.") {
        return Ok((Field::Channel(key), Kind::Text));
    }
    if let Some(key) = keyed("company.") {
        return Ok((Field::CompanyAttribute(key), Kind::Any));
    }
    Err(format!(
        "unknown field `{name}`; fields are attributes.<key>, userId, identified, \
         identity.state, name, email, phone, channels.<channel>, sessionCount, \
         conversationCount, firstSeenAt, lastSeenAt, browser.name, os.name, \
         location.country, location.timezone, company.id, company.name, company.<key>"
    ))
}

/// What a visitor holds in a field, borrowed from its copy.
#[derive(Clone, Copy, Debug)]
enum Got<'a> {
    Missing,
    Text(&'a str),
    Bool(bool),
    Number(f64),
    Time(Millis),
    Json(&'a Value),
}

impl Field {
    fn read<'a>(&self, v: &'a Visitor) -> Got<'a> {
        let text = |t: Option<&'a str>| t.map_or(Got::Missing, Got::Text);
        match self {
            Field::Attribute(key) => v.traits.get(key).map_or(Got::Missing, Got::Json),
            Field::Channel(key) => text(v.channels.get(key).and_then(Value::as_str)),
            Field::UserId => text(v.user_id.as_ref().map(|u| u.as_str())),
            Field::Identified => Got::Bool(!v.user_ids.is_empty()),
            Field::IdentityState => Got::Text(v.identity.as_str()),
            Field::Contact(key) => text(v.traits.get(*key).and_then(Value::as_str)),
            Field::SessionCount => Got::Number(v.sessions as f64),
            Field::ConversationCount => Got::Number(v.conversations as f64),
            Field::FirstSeenAt => Got::Time(v.first_seen),
            Field::LastSeenAt => Got::Time(v.last_seen),
            Field::BrowserName => text(v.client.browser.as_ref().map(|b| b.name.as_str())),
            Field::OsName => text(v.client.os.as_ref().map(|o| o.name.as_str())),
            Field::LocationCountry => text(v.client.country.as_deref()),
            Field::LocationTimezone => text(v.client.timezone.as_deref()),
            Field::CompanyId => text(v.company.as_ref().map(|(id, _)| id.as_str())),
            Field::CompanyName => text(v.company.as_ref().and_then(|(_, n)| n.as_deref())),
            Field::CompanyAttribute(key) => v
                .company_attributes
                .as_ref()
                .and_then(|a| a.get(key))
                .map_or(Got::Missing, Got::Json),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    Equals,
    NotEquals,
    Contains,
    StartsWith,
    In,
    Gt,
    Gte,
    Lt,
    Lte,
    Exists,
    NotExists,
}

const OPERATORS: [(&str, Operator); 11] = [
    ("equals", Operator::Equals),
    ("not_equals", Operator::NotEquals),
    ("contains", Operator::Contains),
    ("starts_with", Operator::StartsWith),
    ("in", Operator::In),
    ("gt", Operator::Gt),
    ("gte", Operator::Gte),
    ("lt", Operator::Lt),
    ("lte", Operator::Lte),
    ("exists", Operator::Exists),
    ("not_exists", Operator::NotExists),
];

impl Operator {
    fn parse(name: &str) -> Option<Operator> {
        OPERATORS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, op)| *op)
    }

    fn allowed_on(self, kind: Kind) -> bool {
        use Operator::*;
        match kind {
            Kind::Any => true,
            Kind::Text => matches!(
                self,
                Equals | NotEquals | Contains | StartsWith | In | Exists | NotExists
            ),
            Kind::Choice(_) => matches!(self, Equals | NotEquals | In),
            Kind::Bool => matches!(self, Equals | NotEquals),
            Kind::Count => matches!(self, Equals | NotEquals | In | Gt | Gte | Lt | Lte),
            Kind::Time => matches!(self, Equals | NotEquals | Gt | Gte | Lt | Lte),
        }
    }
}

/// A condition's value, checked and parsed once when the segment is defined.
#[derive(Clone, Debug, PartialEq)]
enum Operand {
    None,
    Text(String),
    Bool(bool),
    Number(f64),
    Time(Millis),
    /// An attribute's value to compare with for (in)equality: any JSON scalar.
    Scalar(Value),
    List(Vec<Operand>),
}

/// One condition: a field, an operator and a value.
#[derive(Clone, Debug, PartialEq)]
struct Condition {
    /// As the definition named them, to write the definition back unchanged.
    field_name: String,
    operator_name: &'static str,
    value: Option<Value>,
    field: Field,
    operator: Operator,
    operand: Operand,
}

/// Whether a segment holds visitors matching all of its conditions or any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    All,
    Any,
}

impl Match {
    pub fn as_str(self) -> &'static str {
        match self {
            Match::All => "all",
            Match::Any => "any",
        }
    }
}

/// A segment's definition, as the API gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentSpec {
    pub name: String,
    pub matching: Match,
    conditions: Vec<Condition>,
}

/// A refusal of a definition, naming the part of the body at fault.
fn refuse(path: &str, message: impl Into<String>) -> HubError {
    let mut error = HubError::bad_request(message);
    error.details = Some(json!({ "field": path }));
    error
}

impl SegmentSpec {
    /// Reads and checks a definition (`{"name", "conditions", "match"}`); the refusal names
    /// the first bad part, in the message and as `details.field`.
    pub fn parse(body: &Value) -> Result<SegmentSpec, HubError> {
        let object = body
            .as_object()
            .ok_or_else(|| refuse("", "a segment is a JSON object"))?;
        if let Some(unknown) = object
            .keys()
            .find(|k| !["name", "conditions", "match"].contains(&k.as_str()))
        {
            return Err(refuse(
                unknown,
                format!("unknown field `{unknown}`; a segment has name, conditions and match"),
            ));
        }
        let name = match object.get("name") {
            Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
            _ => return Err(refuse("name", "`name` must be a non-empty string")),
        };
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(refuse(
                "name",
                format!("`name` is longer than {MAX_NAME_CHARS} characters"),
            ));
        }
        let matching = match object.get("match") {
            None => Match::All,
            Some(Value::String(m)) if m == "all" => Match::All,
            Some(Value::String(m)) if m == "any" => Match::Any,
            Some(other) => {
                return Err(refuse(
                    "match",
                    format!("`match` is \"all\" or \"any\", got {other}"),
                ))
            }
        };
        let list = match object.get("conditions") {
            Some(Value::Array(list)) if !list.is_empty() => list,
            _ => {
                return Err(refuse(
                    "conditions",
                    "`conditions` must be a non-empty list of {field, operator, value}",
                ))
            }
        };
        if list.len() > MAX_CONDITIONS {
            return Err(refuse(
                "conditions",
                format!(
                    "a segment holds at most {MAX_CONDITIONS} conditions, got {}",
                    list.len()
                ),
            ));
        }
        let conditions = list
            .iter()
            .enumerate()
            .map(|(i, c)| Condition::parse(&format!("conditions[{i}]"), c))
            .collect::<Result<_, _>>()?;
        Ok(SegmentSpec {
            name,
            matching,
            conditions,
        })
    }

    /// The definition as the API shows it (and as the log and the shared stream keep it).
    pub fn to_json(&self) -> Value {
        let conditions: Vec<Value> = self
            .conditions
            .iter()
            .map(|c| {
                let mut object = Map::new();
                object.insert("field".into(), c.field_name.clone().into());
                object.insert("operator".into(), c.operator_name.into());
                if let Some(value) = &c.value {
                    object.insert("value".into(), value.clone());
                }
                Value::Object(object)
            })
            .collect();
        json!({ "name": self.name, "conditions": conditions, "match": self.matching.as_str() })
    }

    /// Whether a condition reads the visitor's company.
    pub fn reads_company(&self) -> bool {
        self.conditions.iter().any(|c| c.field.of_company())
    }

    /// Whether the visitor belongs in the segment.
    pub fn holds(&self, visitor: &Visitor) -> bool {
        let mut each = self.conditions.iter().map(|c| c.holds(visitor));
        match self.matching {
            Match::All => each.all(|held| held),
            Match::Any => each.any(|held| held),
        }
    }
}

impl Serialize for SegmentSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SegmentSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        SegmentSpec::parse(&value).map_err(|e| serde::de::Error::custom(e.message))
    }
}

impl Condition {
    fn parse(path: &str, c: &Value) -> Result<Condition, HubError> {
        let object = c.as_object().ok_or_else(|| {
            refuse(
                path,
                format!("`{path}` must be an object {{field, operator, value}}"),
            )
        })?;
        if let Some(unknown) = object
            .keys()
            .find(|k| !["field", "operator", "value"].contains(&k.as_str()))
        {
            let at = format!("{path}.{unknown}");
            return Err(refuse(
                &at,
                format!("unknown field `{at}`; a condition has field, operator and value"),
            ));
        }
        let field_path = format!("{path}.field");
        let field_name = object
            .get("field")
            .and_then(Value::as_str)
            .ok_or_else(|| refuse(&field_path, format!("`{field_path}` must be a string")))?;
        let (field, kind) = field_of(field_name)
            .map_err(|why| refuse(&field_path, format!("`{field_path}`: {why}")))?;
        let op_path = format!("{path}.operator");
        let op_name = object
            .get("operator")
            .and_then(Value::as_str)
            .ok_or_else(|| refuse(&op_path, format!("`{op_path}` must be a string")))?;
        let (operator_name, operator) = OPERATORS
            .iter()
            .find(|(n, _)| *n == op_name)
            .copied()
            .ok_or_else(|| {
                let names: Vec<_> = OPERATORS.iter().map(|(n, _)| *n).collect();
                refuse(
                    &op_path,
                    format!(
                        "`{op_path}`: unknown operator {op_name:?}; operators are {}",
                        names.join(", ")
                    ),
                )
            })?;
        debug_assert_eq!(Operator::parse(operator_name), Some(operator));
        if !operator.allowed_on(kind) {
            return Err(refuse(
                &op_path,
                format!("`{op_path}`: the operator {op_name} does not apply to `{field_name}`"),
            ));
        }
        let value_path = format!("{path}.value");
        let value = object.get("value").filter(|v| !v.is_null());
        let operand = operand(&value_path, field_name, kind, operator, value)?;
        Ok(Condition {
            field_name: field_name.to_owned(),
            operator_name,
            value: value.cloned(),
            field,
            operator,
            operand,
        })
    }

    fn holds(&self, visitor: &Visitor) -> bool {
        let got = self.field.read(visitor);
        let present = match got {
            Got::Missing => false,
            Got::Json(v) => !v.is_null(),
            _ => true,
        };
        match self.operator {
            Operator::Exists => present,
            Operator::NotExists => !present,
            Operator::Equals => equal(got, &self.operand),
            // A visitor without the field does not equal the value.
            Operator::NotEquals => !equal(got, &self.operand),
            Operator::In => match &self.operand {
                Operand::List(values) => values.iter().any(|v| equal(got, v)),
                _ => false,
            },
            Operator::Contains | Operator::StartsWith => {
                let (Some(text), Operand::Text(needle)) = (text_of(got), &self.operand) else {
                    return false;
                };
                match self.operator {
                    Operator::Contains => text.contains(needle.as_str()),
                    _ => text.starts_with(needle.as_str()),
                }
            }
            Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte => {
                let Some(order) = compare(got, &self.operand) else {
                    return false;
                };
                match self.operator {
                    Operator::Gt => order.is_gt(),
                    Operator::Gte => order.is_ge(),
                    Operator::Lt => order.is_lt(),
                    _ => order.is_le(),
                }
            }
        }
    }
}

/// Checks and parses a condition's value for its field's kind and its operator.
fn operand(
    path: &str,
    field: &str,
    kind: Kind,
    operator: Operator,
    value: Option<&Value>,
) -> Result<Operand, HubError> {
    let bad = |what: &str| {
        refuse(
            path,
            format!("`{path}` must be {what} for `{field}` with this operator"),
        )
    };
    match operator {
        Operator::Exists | Operator::NotExists => match value {
            None => Ok(Operand::None),
            Some(_) => Err(bad("absent")),
        },
        Operator::In => {
            let Some(Value::Array(list)) = value else {
                return Err(bad("a non-empty list"));
            };
            if list.is_empty() || list.len() > MAX_IN_VALUES {
                return Err(bad(&format!("a list of 1 to {MAX_IN_VALUES} values")));
            }
            list.iter()
                .map(|v| scalar(path, field, kind, Operator::Equals, v))
                .collect::<Result<_, _>>()
                .map(Operand::List)
        }
        _ => match value {
            Some(v) => scalar(path, field, kind, operator, v),
            None => Err(bad("given")),
        },
    }
}

/// One value to compare with: a text, a bool, a number or a time, as the kind asks.
fn scalar(
    path: &str,
    field: &str,
    kind: Kind,
    operator: Operator,
    value: &Value,
) -> Result<Operand, HubError> {
    let bad = |what: &str| {
        refuse(
            path,
            format!("`{path}` must be {what} for `{field}`, got {value}"),
        )
    };
    let text = |v: &Value| -> Result<String, HubError> {
        match v.as_str() {
            Some(s) if s.chars().count() <= MAX_VALUE_CHARS => Ok(s.to_owned()),
            Some(_) => Err(bad(&format!("at most {MAX_VALUE_CHARS} characters"))),
            None => Err(bad("a string")),
        }
    };
    let ordering = matches!(
        operator,
        Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte
    );
    match kind {
        Kind::Text => text(value).map(Operand::Text),
        Kind::Choice(choices) => {
            let t = text(value)?;
            if choices.contains(&t.as_str()) {
                Ok(Operand::Text(t))
            } else {
                Err(bad(&format!("one of {}", choices.join(", "))))
            }
        }
        Kind::Bool => value
            .as_bool()
            .map(Operand::Bool)
            .ok_or_else(|| bad("true or false")),
        Kind::Count => value
            .as_f64()
            .map(Operand::Number)
            .ok_or_else(|| bad("a number")),
        Kind::Time => time(value)
            .map(Operand::Time)
            .ok_or_else(|| bad("an RFC 3339 time")),
        Kind::Any if ordering => match value {
            Value::Number(n) => Ok(Operand::Number(n.as_f64().unwrap_or(f64::NAN))),
            _ => time(value)
                .map(Operand::Time)
                .ok_or_else(|| bad("a number or an RFC 3339 time")),
        },
        Kind::Any if matches!(operator, Operator::Contains | Operator::StartsWith) => {
            text(value).map(Operand::Text)
        }
        Kind::Any => match value {
            Value::String(_) => text(value).map(|_| Operand::Scalar(value.clone())),
            Value::Number(_) | Value::Bool(_) => Ok(Operand::Scalar(value.clone())),
            _ => Err(bad("a string, a number or a bool")),
        },
    }
}

fn time(value: &Value) -> Option<Millis> {
    let text = value.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn text_of(got: Got<'_>) -> Option<&str> {
    match got {
        Got::Text(t) => Some(t),
        Got::Json(Value::String(t)) => Some(t),
        _ => None,
    }
}

fn equal(got: Got<'_>, operand: &Operand) -> bool {
    match (got, operand) {
        (Got::Text(a), Operand::Text(b)) => a == b,
        (Got::Bool(a), Operand::Bool(b)) => a == *b,
        (Got::Number(a), Operand::Number(b)) => a == *b,
        (Got::Time(a), Operand::Time(b)) => a == *b,
        // Numbers are equal by value, so 1 equals 1.0.
        (Got::Json(Value::Number(a)), Operand::Scalar(Value::Number(b))) => {
            a.as_f64() == b.as_f64()
        }
        (Got::Json(a), Operand::Scalar(b)) => a == b,
        _ => false,
    }
}

fn compare(got: Got<'_>, operand: &Operand) -> Option<std::cmp::Ordering> {
    match (got, operand) {
        (Got::Number(a), Operand::Number(b)) => a.partial_cmp(b),
        (Got::Time(a), Operand::Time(b)) => Some(a.cmp(b)),
        (Got::Json(Value::Number(a)), Operand::Number(b)) => a.as_f64()?.partial_cmp(b),
        (Got::Json(v @ Value::String(_)), Operand::Time(b)) => Some(time(v)?.cmp(b)),
        _ => None,
    }
}

/// A segment as the hub keeps it (and as the log keeps its definition).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub id: SegmentId,
    pub spec: SegmentSpec,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A membership to change: the visitor enters (`true`) or leaves the segment.
pub type Move = (SegmentId, bool);

/// Every segment and who is in it. Membership is kept both ways, so a visitor's changes
/// look up its own segments and a segment's list is its own set.
#[derive(Clone, Debug, Default)]
pub struct Segments {
    defs: BTreeMap<SegmentId, Segment>,
    members: HashMap<SegmentId, BTreeSet<VisitorId>>,
    of_visitor: HashMap<VisitorId, BTreeSet<SegmentId>>,
    /// The number the next segment created is given: never reused.
    next: u64,
}

impl Segments {
    /// The id the next segment created gets.
    pub fn next_id(&self) -> SegmentId {
        SegmentId(self.next.max(1))
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// Whether a segment reads visitors' companies (then a company's change moves its
    /// members).
    pub fn read_company(&self) -> bool {
        self.defs.values().any(|s| s.spec.reads_company())
    }

    pub fn get(&self, id: SegmentId) -> Option<&Segment> {
        self.defs.get(&id)
    }

    /// Every segment, in id order.
    pub fn all(&self) -> impl Iterator<Item = &Segment> {
        self.defs.values()
    }

    /// How many visitors a segment holds.
    pub fn count(&self, id: SegmentId) -> usize {
        self.members.get(&id).map_or(0, BTreeSet::len)
    }

    /// A segment's members, in visitor id order.
    pub fn members(&self, id: SegmentId) -> Vec<VisitorId> {
        self.members
            .get(&id)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The segments a visitor is in, in id order, with their names.
    pub fn of(&self, visitor: VisitorId) -> Vec<(SegmentId, String)> {
        let held = self.of_visitor.get(&visitor).into_iter().flatten();
        held.filter_map(|id| Some((*id, self.defs.get(id)?.spec.name.clone())))
            .collect()
    }

    pub fn is_member(&self, id: SegmentId, visitor: VisitorId) -> bool {
        self.of_visitor
            .get(&visitor)
            .is_some_and(|segments| segments.contains(&id))
    }

    /// Creates or replaces a segment's definition; its members stay until the events that
    /// move them are applied.
    pub fn put(&mut self, segment: Segment) {
        self.next = self.next.max(segment.id.0 + 1);
        self.defs.insert(segment.id, segment);
    }

    /// Removes a segment with its memberships.
    pub fn remove(&mut self, id: SegmentId) {
        self.defs.remove(&id);
        for visitor in self.members.remove(&id).unwrap_or_default() {
            self.drop_of_visitor(visitor, id);
        }
    }

    /// Puts a visitor in a segment (ignored for a segment that is gone).
    pub fn enter(&mut self, id: SegmentId, visitor: VisitorId) {
        if !self.defs.contains_key(&id) {
            return;
        }
        self.members.entry(id).or_default().insert(visitor);
        self.of_visitor.entry(visitor).or_default().insert(id);
    }

    pub fn leave(&mut self, id: SegmentId, visitor: VisitorId) {
        if let Some(members) = self.members.get_mut(&id) {
            members.remove(&visitor);
        }
        self.drop_of_visitor(visitor, id);
    }

    /// Takes a visitor out of every segment (it was erased or forgotten).
    pub fn forget(&mut self, visitor: VisitorId) {
        for id in self.of_visitor.remove(&visitor).unwrap_or_default() {
            if let Some(members) = self.members.get_mut(&id) {
                members.remove(&visitor);
            }
        }
    }

    fn drop_of_visitor(&mut self, visitor: VisitorId, id: SegmentId) {
        if let Some(segments) = self.of_visitor.get_mut(&visitor) {
            segments.remove(&id);
            if segments.is_empty() {
                self.of_visitor.remove(&visitor);
            }
        }
    }

    /// The memberships a visitor as it is now (`None`: it is gone) moves, in segment id
    /// order: the segments it now matches and is not in, and those it is in and no longer
    /// matches.
    pub fn moves(&self, visitor: VisitorId, now: Option<&Visitor>) -> Vec<Move> {
        let held = self.of_visitor.get(&visitor);
        let was = |id: &SegmentId| held.is_some_and(|h| h.contains(id));
        match now {
            Some(v) => self
                .defs
                .values()
                .filter_map(|s| {
                    let is = s.spec.holds(v);
                    (is != was(&s.id)).then_some((s.id, is))
                })
                .collect(),
            None => held.into_iter().flatten().map(|id| (*id, false)).collect(),
        }
    }

    /// The memberships of one segment that visitors as they are now move.
    pub fn moves_of<'a>(
        &self,
        id: SegmentId,
        visitors: impl IntoIterator<Item = (VisitorId, Option<&'a Visitor>)>,
    ) -> Vec<(VisitorId, bool)> {
        let Some(segment) = self.defs.get(&id) else {
            return Vec::new();
        };
        visitors
            .into_iter()
            .filter_map(|(visitor, now)| {
                let is = now.is_some_and(|v| segment.spec.holds(v));
                (is != self.is_member(id, visitor)).then_some((visitor, is))
            })
            .collect()
    }

    /// The definitions alone, for a snapshot (members are rebuilt from the profiles).
    pub fn definitions(&self) -> (u64, Vec<Segment>) {
        (self.next, self.defs.values().cloned().collect())
    }

    /// A table of definitions restored from a snapshot, with no members yet.
    pub fn restored(next: u64, defs: Vec<Segment>) -> Segments {
        let mut segments = Segments {
            next,
            ..Segments::default()
        };
        for segment in defs {
            segments.put(segment);
        }
        segments
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::state::{ClientInfo, IdentityState};
    use crate::ids::{CompanyId, CustomerId, UserId};
    use crate::ingest::event::Software;

    fn visitor() -> Visitor {
        let customer = CustomerId::parse("00000000-0000-4000-8000-0000000000c1").unwrap();
        let traits = json!({"plan": "premium", "seats": 12, "trial": false,
            "renewsAt": "2027-01-01T00:00:00Z", "name": "Ada Lovelace", "email": "ada@example.test"});
        Visitor {
            id: VisitorId::of_first_customer(customer),
            identity: IdentityState::Authenticated,
            user_id: Some(UserId::from("u-1")),
            user_ids: vec![UserId::from("u-1")],
            customers: vec![customer],
            traits: traits.as_object().unwrap().clone(),
            channels: json!({"whatsapp": "10435685475"})
                .as_object()
                .unwrap()
                .clone(),
            company: Some((CompanyId::from("acme"), Some("Acme Corp".into()))),
            company_attributes: json!({"tier": "gold", "seats": 800}).as_object().cloned(),
            segments: Vec::new(),
            sessions: 3,
            active_sessions: 1,
            pages_viewed: 7,
            actions: 2,
            conversations: 1,
            live_actions: Vec::new(),
            first_seen: time(&json!("2026-01-01T00:00:00Z")).unwrap(),
            last_seen: time(&json!("2026-06-01T00:00:00Z")).unwrap(),
            client: ClientInfo {
                browser: Some(Software {
                    name: "Chrome".into(),
                    version: Some("120".into()),
                }),
                os: None,
                country: Some("NL".into()),
                city: None,
                timezone: Some("Europe/Amsterdam".into()),
            },
            history: None,
        }
    }

    fn spec(conditions: Value, matching: &str) -> Result<SegmentSpec, HubError> {
        SegmentSpec::parse(&json!({"name": "s", "conditions": conditions, "match": matching}))
    }

    fn one(field: &str, operator: &str, value: Value) -> Result<SegmentSpec, HubError> {
        let mut c = json!({"field": field, "operator": operator});
        if !value.is_null() {
            c["value"] = value;
        }
        spec(json!([c]), "all")
    }

    #[test]
    fn each_field_and_operator_evaluates_as_documented() {
        let v = visitor();
        let cases: &[(&str, &str, Value, bool)] = &[
            ("attributes.plan", "equals", json!("premium"), true),
            ("attributes.plan", "not_equals", json!("premium"), false),
            ("attributes.missing", "not_equals", json!("premium"), true),
            ("attributes.plan", "contains", json!("emi"), true),
            ("attributes.plan", "starts_with", json!("pre"), true),
            ("attributes.plan", "starts_with", json!("emi"), false),
            ("attributes.plan", "in", json!(["basic", "premium"]), true),
            ("attributes.seats", "equals", json!(12.0), true),
            ("attributes.seats", "gt", json!(11), true),
            ("attributes.seats", "gte", json!(12), true),
            ("attributes.seats", "lt", json!(12), false),
            ("attributes.seats", "lte", json!(12), true),
            ("attributes.plan", "gt", json!(1), false),
            (
                "attributes.renewsAt",
                "gt",
                json!("2026-12-31T23:59:59Z"),
                true,
            ),
            ("attributes.trial", "equals", json!(false), true),
            ("attributes.plan", "exists", Value::Null, true),
            ("attributes.missing", "exists", Value::Null, false),
            ("attributes.missing", "not_exists", Value::Null, true),
            ("userId", "equals", json!("u-1"), true),
            ("identified", "equals", json!(true), true),
            (
                "identity.state",
                "in",
                json!(["recognized", "authenticated"]),
                true,
            ),
            ("name", "starts_with", json!("Ada"), true),
            ("email", "contains", json!("@example"), true),
            ("phone", "not_exists", Value::Null, true),
            ("channels.whatsapp", "equals", json!("10435685475"), true),
            ("channels.slack", "exists", Value::Null, false),
            ("sessionCount", "gte", json!(3), true),
            ("conversationCount", "in", json!([0, 1]), true),
            (
                "firstSeenAt",
                "lt",
                json!("2026-01-02T00:00:00+01:00"),
                true,
            ),
            ("lastSeenAt", "gt", json!("2026-06-01T00:00:00Z"), false),
            ("browser.name", "equals", json!("Chrome"), true),
            ("os.name", "exists", Value::Null, false),
            ("location.country", "equals", json!("NL"), true),
            ("location.timezone", "starts_with", json!("Europe/"), true),
            ("company.id", "equals", json!("acme"), true),
            ("company.name", "contains", json!("Acme"), true),
            ("company.tier", "equals", json!("gold"), true),
            ("company.seats", "gte", json!(500), true),
            ("company.missing", "not_exists", Value::Null, true),
        ];
        for (field, operator, value, expected) in cases {
            let s = one(field, operator, value.clone())
                .unwrap_or_else(|e| panic!("{field} {operator} {value}: {}", e.message));
            assert_eq!(s.holds(&v), *expected, "{field} {operator} {value}");
        }
    }

    #[test]
    fn match_all_needs_every_condition_and_any_one() {
        let v = visitor();
        let conditions = json!([
            {"field": "attributes.plan", "operator": "equals", "value": "premium"},
            {"field": "sessionCount", "operator": "gt", "value": 10}
        ]);
        assert!(!spec(conditions.clone(), "all").unwrap().holds(&v));
        assert!(spec(conditions, "any").unwrap().holds(&v));
    }

    #[test]
    fn a_bad_definition_is_refused_naming_its_part() {
        let cases: &[(Value, &str)] = &[
            (json!({"conditions": []}), "name"),
            (json!({"name": "s", "conditions": []}), "conditions"),
            (json!({"name": "s", "conditions": [], "extra": 1}), "extra"),
            (
                json!({"name": "s", "match": "most", "conditions": [{}]}),
                "match",
            ),
            (
                json!({"name": "s", "conditions": [{"field": "plan", "operator": "equals", "value": "x"}]}),
                "conditions[0].field",
            ),
            (
                json!({"name": "s", "conditions": [{"field": "company.", "operator": "equals", "value": "x"}]}),
                "conditions[0].field",
            ),
            (
                json!({"name": "s", "conditions": [{"field": "company.id", "operator": "gt", "value": 1}]}),
                "conditions[0].operator",
            ),
            (
                json!({"name": "s", "conditions": [{"field": "attributes.name", "operator": "exists"}]}),
                "conditions[0].field",
            ),
            (
                json!({"name": "s", "conditions": [{"field": "userId", "operator": "like", "value": "x"}]}),
                "conditions[0].operator",
            ),
            (
                json!({"name": "s", "conditions": [{"field": "identified", "operator": "gt", "value": true}]}),
                "conditions[0].operator",
            ),
            (
                json!({"name": "s", "conditions": [{"field": "sessionCount", "operator": "gt", "value": "3"}]}),
                "conditions[0].value",
            ),
            (
                json!({"name": "s", "conditions": [{"field": "lastSeenAt", "operator": "gt", "value": "yesterday"}]}),
                "conditions[0].value",
            ),
            (
                json!({"name": "s", "conditions": [{"field": "userId", "operator": "in", "value": "u-1"}]}),
                "conditions[0].value",
            ),
            (
                json!({"name": "s", "conditions": [{"field": "userId", "operator": "exists", "value": "u-1"}]}),
                "conditions[0].value",
            ),
            (
                json!({"name": "s", "conditions": [{"field": "identity.state", "operator": "equals", "value": "known"}]}),
                "conditions[0].value",
            ),
            (
                json!({"name": "s", "conditions": [{"field": "userId", "operator": "equals", "value": "x"}, {"field": "userId", "operator": "equals"}]}),
                "conditions[1].value",
            ),
        ];
        for (body, part) in cases {
            let refused = SegmentSpec::parse(body).expect_err(&body.to_string());
            assert_eq!(
                refused.details,
                Some(json!({"field": part})),
                "{body}: {}",
                refused.message
            );
        }
        let many: Vec<Value> = (0..=MAX_CONDITIONS)
            .map(|_| json!({"field": "userId", "operator": "exists"}))
            .collect();
        let refused = spec(Value::Array(many), "all").unwrap_err();
        assert_eq!(refused.details, Some(json!({"field": "conditions"})));
    }

    #[test]
    fn a_definition_reads_back_from_its_json_unchanged() {
        let s = spec(
            json!([{"field": "attributes.seats", "operator": "gte", "value": 10},
                   {"field": "phone", "operator": "exists"}]),
            "any",
        )
        .unwrap();
        let back: SegmentSpec = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn moves_enter_and_leave_once() {
        let v = visitor();
        let mut table = Segments::default();
        let premium = Segment {
            id: table.next_id(),
            spec: one("attributes.plan", "equals", json!("premium")).unwrap(),
            created_at: 1,
            updated_at: 1,
        };
        table.put(premium.clone());
        assert_eq!(table.next_id(), SegmentId(2));
        assert_eq!(table.moves(v.id, Some(&v)), vec![(premium.id, true)]);
        table.enter(premium.id, v.id);
        assert!(table.moves(v.id, Some(&v)).is_empty());
        assert_eq!(table.count(premium.id), 1);
        assert_eq!(table.moves(v.id, None), vec![(premium.id, false)]);
        table.remove(premium.id);
        assert!(!table.is_member(premium.id, v.id));
        // Ids are never reused, even after the newest segment is removed.
        assert_eq!(table.next_id(), SegmentId(2));
    }
}
