//! A code file's text as the list of scripts the Storage API keeps (`codes[].script`, a shared
//! code row's `code_content`), split as `kbc` (keboola-as-code) splits it when it reads a
//! project: the SQL of the Snowflake, Synapse and Oracle transformations into statements, any
//! other component's code as one script. The statements come from our own scanner
//! ([`statements`]), which ends a statement at a `;` outside strings, `$$` blocks and comments,
//! as `kbc` does. Also the code file's extension and comment marker per component, which a
//! shared code link (`-- {{:codes/name}}`) uses.

use std::iter::Peekable;
use std::str::CharIndices;

/// Components whose code is split into SQL statements (as `kbc` splits it; BigQuery and
/// Teradata code files are `.sql` too but stay one script there).
const SPLIT_SQL: [&str; 3] = [
    "keboola.snowflake-transformation",
    "keboola.synapse-transformation",
    "keboola.oracle-transformation",
];

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
    statements(text).into_iter().map(str::to_string).collect()
}

/// Where the scanner is: in code, where a `;` ends the statement, or inside a construct whose
/// `;` belong to the statement.
#[derive(Clone, Copy)]
enum State {
    Code,
    /// A string quoted with `'` or `"`; a backslash escapes the next character.
    Quoted(char),
    /// Just after a backslash in a string quoted with the given quote.
    Escaped(char),
    /// A `$$ ... $$` block (a Snowflake procedure body), ended by the next `$$`.
    Dollar,
    /// A `/* ... */` comment, ended by the next `*/`.
    BlockComment,
    /// A `#`, `--` or `//` comment, ended by the end of the line.
    LineComment,
}

/// The statements of SQL text, one pass char by char: each runs up to and including a `;` in
/// code (see [`State`]), the text after the last `;` is the last one. Each is trimmed, and one
/// holding nothing but its `;` is dropped. An unterminated string, block or comment runs to the
/// end, so its statement keeps the rest of the text rather than losing or splitting it.
fn statements(sql: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut start = 0;
    let mut state = State::Code;
    let mut chars = sql.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        state = match (state, c) {
            (State::Code, ';') => {
                keep(&mut found, &sql[start..=at]);
                start = at + 1;
                State::Code
            }
            (State::Code, '\'' | '"') => State::Quoted(c),
            (State::Code, '#') => State::LineComment,
            (State::Code, '-') if next_is(&mut chars, '-') => State::LineComment,
            (State::Code, '/') if next_is(&mut chars, '/') => State::LineComment,
            (State::Code, '/') if next_is(&mut chars, '*') => State::BlockComment,
            (State::Code, '$') if next_is(&mut chars, '$') => State::Dollar,
            (State::Quoted(quote), '\\') => State::Escaped(quote),
            (State::Quoted(quote), _) if c == quote => State::Code,
            (State::Escaped(quote), _) => State::Quoted(quote),
            (State::Dollar, '$') if next_is(&mut chars, '$') => State::Code,
            (State::BlockComment, '*') if next_is(&mut chars, '/') => State::Code,
            (State::LineComment, '\n') => State::Code,
            (state, _) => state,
        };
    }
    keep(&mut found, &sql[start..]);
    found
}

/// Adds a statement, trimmed, unless it holds nothing but its `;`.
fn keep<'a>(found: &mut Vec<&'a str>, statement: &'a str) {
    let statement = statement.trim();
    let body = statement.strip_suffix(';').unwrap_or(statement);
    if !body.trim().is_empty() {
        found.push(statement);
    }
}

/// Whether the next character is `want`, taking it if so (the second of `--`, `$$`, `*/`...).
fn next_is(chars: &mut Peekable<CharIndices>, want: char) -> bool {
    chars.next_if(|&(_, c)| c == want).is_some()
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
    fn quoted_strings_keep_their_semicolons_and_backslash_escapes() {
        assert_eq!(
            statements(r"SELECT 'a;b', 'c\';d'; SELECT 'it''s; ok';SELECT 2"),
            [r"SELECT 'a;b', 'c\';d';", "SELECT 'it''s; ok';", "SELECT 2"]
        );
        assert_eq!(
            statements(r#"SELECT "x;y", "z\";w", 'q"; r'; SELECT "'"; SELECT 3"#),
            [
                r#"SELECT "x;y", "z\";w", 'q"; r';"#,
                r#"SELECT "'";"#,
                "SELECT 3"
            ]
        );
        // A string may span lines, and a backslash escapes a backslash.
        assert_eq!(
            statements("SELECT 'a\n;b\\\\'; SELECT 'é;€'"),
            ["SELECT 'a\n;b\\\\';", "SELECT 'é;€'"]
        );
    }

    #[test]
    fn dollar_blocks_run_to_the_next_double_dollar() {
        assert_eq!(
            statements("CREATE PROCEDURE p() AS $$ a; $ b; $$; CALL p(); SELECT $1;"),
            [
                "CREATE PROCEDURE p() AS $$ a; $ b; $$;",
                "CALL p();",
                "SELECT $1;"
            ]
        );
    }

    #[test]
    fn block_comments_run_to_the_next_star_slash() {
        assert_eq!(
            statements("/* a; * b; **/ SELECT 1; SELECT 6 / 2 * 3; /**/ SELECT 2"),
            [
                "/* a; * b; **/ SELECT 1;",
                "SELECT 6 / 2 * 3;",
                "/**/ SELECT 2"
            ]
        );
    }

    #[test]
    fn line_comments_run_to_the_end_of_the_line() {
        assert_eq!(
            statements(
                "# a; 'b\nSELECT 1; -- c; \"d\nSELECT 2 - 1; // e; $$\r\nSELECT 3; SELECT 4\n-- f;"
            ),
            [
                "# a; 'b\nSELECT 1;",
                "-- c; \"d\nSELECT 2 - 1;",
                "// e; $$\r\nSELECT 3;",
                "SELECT 4\n-- f;"
            ]
        );
    }

    #[test]
    fn statements_are_trimmed_and_empty_ones_dropped() {
        assert_eq!(
            statements(" \t;\n ;; SELECT 1 ;\u{a0}\n;\n  SELECT 2\n "),
            ["SELECT 1 ;", "SELECT 2"]
        );
        assert!(statements("").is_empty());
        assert!(statements(" ; \n").is_empty());
    }

    #[test]
    fn an_unterminated_string_block_or_comment_keeps_the_rest_as_one_statement() {
        for open in [
            "'a; b",
            "\"a; b",
            "'a\\",
            "$$ a; b",
            "/* a; b *",
            "-- a; b",
            "// a; b",
            "# a; b",
        ] {
            let sql = format!("SELECT 1; SELECT {open}; SELECT 2");
            assert_eq!(
                statements(&sql),
                ["SELECT 1;".to_string(), format!("SELECT {open}; SELECT 2")],
                "{sql}"
            );
        }
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
