//! A code file's text as the list of scripts the Storage API keeps (`codes[].script`, a shared
//! code row's `code_content`), split as keboola-as-code splits it when it reads a project: the
//! SQL of the Snowflake, Synapse and Oracle transformations into statements (with the
//! statement pattern Keboola's UI uses, so strings, `$$` blocks and comments holding `;` stay
//! whole), any other component's code as one script. Also the code file's extension and
//! comment marker per component, which a shared code link (`-- {{:codes/name}}`) uses.

use std::sync::LazyLock;

use regex::Regex;

/// Components whose code is split into SQL statements (keboola-as-code's `ScriptsFromStr`;
/// BigQuery and Teradata code files are `.sql` too but stay one script there).
const SPLIT_SQL: [&str; 3] = [
    "keboola.snowflake-transformation",
    "keboola.synapse-transformation",
    "keboola.oracle-transformation",
];

/// One statement: quoted strings (with backslash escapes), `$$...$$` blocks, block and line
/// comments, or any other character, up to a `;` or the end. Go's `\s` is ASCII whitespace.
static STATEMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"[\t\n\f\r ]*((?:'[^'\\]*(?:\\.[^'\\]*)*'"#,
        r#"|"[^"\\]*(?:\\.[^"\\]*)*""#,
        r#"|\$\$(?:.|\n|\r)*?\$\$"#,
        r#"|/\*[^*]*\*+(?:[^*/][^*]*\*+)*/"#,
        r#"|#.*|--.*|//.*"#,
        r#"|[^"';#])+(?:;|$))"#,
    ))
    .expect("the statement pattern compiles")
});

/// The code file's extension for a component's code (`code.<ext>`).
pub fn extension(component_id: &str) -> &'static str {
    match component_id {
        "keboola.snowflake-transformation"
        | "keboola.synapse-transformation"
        | "keboola.oracle-transformation"
        | "keboola.google-bigquery-transformation"
        | "keboola.teradata-transformation" => "sql",
        "keboola.r-transformation" => "r",
        "keboola.julia-transformation" => "jl",
        "keboola.python-spark-transformation"
        | "keboola.python-transformation"
        | "keboola.python-transformation-v2"
        | "keboola.csas-python-transformation-v2"
        | "keboola.python-snowpark-transformation"
        | "keboola.python-mlflow-transformation" => "py",
        _ => "txt",
    }
}

/// The line comment of a component's code files, which may precede a shared code link.
pub fn comment(component_id: &str) -> &'static str {
    match extension(component_id) {
        "sql" => "--",
        "r" | "jl" | "py" => "#",
        _ => "//",
    }
}

/// The scripts of a code file of `component_id`: its text without trailing whitespace, split
/// into SQL statements (each trimmed, empty ones dropped) for the components that split.
pub fn split(text: &str, component_id: &str) -> Vec<String> {
    let text = text.trim_end_matches(['\n', '\r', '\t', ' ']);
    if !SPLIT_SQL.contains(&component_id) {
        return vec![text.to_string()];
    }
    STATEMENT
        .find_iter(text)
        .map(|m| m.as_str().trim())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The shared code path of a link script (`{{:codes/name}}`, alone in its script, maybe after
/// the component's comment marker), if it is one.
pub fn link<'a>(script: &'a str, component_id: &str) -> Option<&'a str> {
    let text = script.trim();
    let text = text
        .strip_prefix(comment(component_id))
        .unwrap_or(text)
        .trim();
    let path = text.strip_prefix("{{:")?.strip_suffix("}}")?;
    let valid = !path.is_empty() && !path.contains([':', '{', '}']);
    valid.then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNOWFLAKE: &str = "keboola.snowflake-transformation";

    #[test]
    fn sql_is_split_into_statements_that_keep_strings_blocks_and_comments_whole() {
        let sql = "\n  CREATE TABLE t (a int);\r\n\nINSERT INTO t VALUES ('x;y', \"q;\\\"\");;  \n\
                   -- note; here\nSELECT 2;\n/* block ; comment */ SELECT 3;\n\
                   EXECUTE IMMEDIATE $$\n  SELECT 4;\n$$;\n# hash ; comment\nSELECT 5\n\n";
        assert_eq!(
            split(sql, SNOWFLAKE),
            [
                "CREATE TABLE t (a int);",
                "INSERT INTO t VALUES ('x;y', \"q;\\\"\");",
                "-- note; here\nSELECT 2;",
                "/* block ; comment */ SELECT 3;",
                "EXECUTE IMMEDIATE $$\n  SELECT 4;\n$$;",
                "# hash ; comment\nSELECT 5",
            ]
        );
        assert!(split("  \n", SNOWFLAKE).is_empty());
        // A link alone, last or between statements only when it ends the code.
        assert_eq!(
            split("SELECT 1;\n\n-- {{:codes/a}}", SNOWFLAKE),
            ["SELECT 1;", "-- {{:codes/a}}"]
        );
        // Other components: the whole code, trailing whitespace dropped.
        assert_eq!(
            split(
                "import x\nprint(1);\nprint(2)\n\n",
                "keboola.python-transformation-v2"
            ),
            ["import x\nprint(1);\nprint(2)"]
        );
        assert_eq!(
            split(
                "SELECT 1; SELECT 2;",
                "keboola.google-bigquery-transformation"
            ),
            ["SELECT 1; SELECT 2;"]
        );
    }

    #[test]
    fn links_are_whole_scripts_maybe_after_the_comment_marker() {
        assert_eq!(
            link("-- {{:codes/my-code}}", SNOWFLAKE),
            Some("codes/my-code")
        );
        assert_eq!(link("  {{:codes/a}}\n", SNOWFLAKE), Some("codes/a"));
        assert_eq!(
            link("#   {{:codes/a}}", "keboola.python-transformation-v2"),
            Some("codes/a")
        );
        assert_eq!(link("# {{:codes/a}}", SNOWFLAKE), None);
        assert_eq!(link("-- {{:codes/a}} x", SNOWFLAKE), None);
        assert_eq!(link("{{:}}", SNOWFLAKE), None);
        assert_eq!(link("{{{:a}}}", SNOWFLAKE), None);
        assert_eq!(link("{{ 123 }}", SNOWFLAKE), None);
        assert_eq!(extension("keboola.r-transformation"), "r");
        assert_eq!(comment("demo"), "//");
    }
}
