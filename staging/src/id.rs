//! Storage identifiers: `stage.c-bucket` and `stage.c-bucket.table`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A Storage stage: tables read by components live in `in`, results usually go to `out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `in`
    In,
    /// `out`
    Out,
}

impl Stage {
    /// The stage as written in ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::In => "in",
            Stage::Out => "out",
        }
    }
}

/// A bucket id `stage.name`, e.g. `in.c-main`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketId {
    stage: Stage,
    name: String,
}

/// A validated table id `stage.bucket.table`, e.g. `in.c-main.orders`.
///
/// Keboola's own test is only "exactly two dots"; here the stage must also be `in`/`out` and
/// names may hold only ASCII letters, digits, `_` and `-`, so an id is always a safe file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableId {
    bucket: BucketId,
    name: String,
}

fn check_name(what: &'static str, id: &str, name: &str) -> Result<()> {
    let bad = |reason| Error::InvalidId {
        what,
        id: id.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.len() > 96 {
        return Err(bad("name longer than 96 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad("names allow only letters, digits, '_' and '-'"));
    }
    Ok(())
}

fn parse_stage(what: &'static str, id: &str, stage: &str) -> Result<Stage> {
    match stage {
        "in" => Ok(Stage::In),
        "out" => Ok(Stage::Out),
        _ => Err(Error::InvalidId {
            what,
            id: id.to_string(),
            reason: "stage must be \"in\" or \"out\"",
        }),
    }
}

impl BucketId {
    /// The bucket's stage.
    pub fn stage(&self) -> Stage {
        self.stage
    }
    /// The bucket name without the stage, e.g. `c-main`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl FromStr for BucketId {
    type Err = Error;
    fn from_str(id: &str) -> Result<Self> {
        let Some((stage, name)) = id.split_once('.') else {
            return Err(Error::InvalidId {
                what: "bucket",
                id: id.to_string(),
                reason: "expected stage.bucket",
            });
        };
        let stage = parse_stage("bucket", id, stage)?;
        check_name("bucket", id, name)?;
        Ok(BucketId {
            stage,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for BucketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.stage.as_str(), self.name)
    }
}

impl TableId {
    /// Keboola's `isTableId`: exactly two dots. Used where Keboola decides between "a full id"
    /// and "a name to put into the default bucket" before validating.
    pub fn looks_like_id(s: &str) -> bool {
        s.matches('.').count() == 2
    }

    /// A table `name` inside `bucket`.
    pub fn new(bucket: &BucketId, name: &str) -> Result<TableId> {
        let id = format!("{bucket}.{name}");
        check_name("table", &id, name)?;
        Ok(TableId {
            bucket: bucket.clone(),
            name: name.to_string(),
        })
    }

    /// The bucket holding the table.
    pub fn bucket(&self) -> &BucketId {
        &self.bucket
    }
    /// The table name without bucket, e.g. `orders`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl FromStr for TableId {
    type Err = Error;
    fn from_str(id: &str) -> Result<Self> {
        let mut parts = id.split('.');
        let (Some(stage), Some(bucket), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::InvalidId {
                what: "table",
                id: id.to_string(),
                reason: "expected stage.bucket.table",
            });
        };
        let stage = parse_stage("table", id, stage)?;
        check_name("table", id, bucket)?;
        check_name("table", id, name)?;
        Ok(TableId {
            bucket: BucketId {
                stage,
                name: bucket.to_string(),
            },
            name: name.to_string(),
        })
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.bucket, self.name)
    }
}

/// The default bucket of a component whose spec sets `default_bucket: true`:
/// `<stage>.c-<component id with every character outside [A-Za-z0-9-] as '-'>-<config id>`.
/// Keboola refuses a job without a configuration id here (a user error).
pub fn default_bucket(
    stage: Stage,
    component_id: &str,
    config_id: Option<&str>,
) -> Result<BucketId> {
    let Some(config) = config_id.filter(|c| !c.is_empty()) else {
        return Err(Error::config(
            "storage.output.default_bucket",
            "the component's default bucket needs a configuration id",
        ));
    };
    let component = crate::sanitize::component_id(component_id);
    format!("{}.c-{component}-{config}", stage.as_str()).parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_table_ids() {
        let id: TableId = "in.c-main.orders_2".parse().unwrap();
        assert_eq!(id.to_string(), "in.c-main.orders_2");
        assert_eq!(id.bucket().to_string(), "in.c-main");
        assert_eq!(id.bucket().stage(), Stage::In);
    }

    #[test]
    fn builds_the_component_default_bucket() {
        let b = default_bucket(Stage::In, "keboola.ex-db_mysql", Some("123")).unwrap();
        assert_eq!(b.to_string(), "in.c-keboola-ex-db-mysql-123");
        assert!(
            default_bucket(Stage::Out, "keboola.ex-db", None)
                .unwrap_err()
                .is_user_error()
        );
    }

    #[test]
    fn refuses_bad_table_ids() {
        for bad in [
            "in.c-main",
            "in.c-main.a.b",
            "sys.c-main.t",
            "in..t",
            "in.c-main.",
            "in.c-ma in.t",
            "in.c-main.../x",
            "out.c-main.t/../../etc",
        ] {
            assert!(bad.parse::<TableId>().is_err(), "{bad} should be refused");
        }
        assert!(TableId::looks_like_id("a.b.c"));
        assert!(!TableId::looks_like_id("a.b"));
    }
}
