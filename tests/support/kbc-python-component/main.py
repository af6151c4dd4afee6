"""A small Keboola component written with Keboola's Python library (`keboola-component`).

The test component of `dockless test` for Python (tests/cli/test_python.rs): it multiplies the
`amount` column of the input table `input.csv` by the parameter `multiplier` and writes
`output.csv` with a primary key and a manifest through the library, so the manifest's form
(legacy `columns` or typed `schema`) is the library's choice from `KBC_DATA_TYPE_SUPPORT`. It
counts its runs in the state file. A `multiplier` that is not a number is a user error: exit 1
with a message, as the library's component template does.
"""

import csv
import logging
from decimal import Decimal, InvalidOperation

from keboola.component.base import ComponentBase
from keboola.component.dao import BaseType, ColumnDefinition
from keboola.component.exceptions import UserException

KEY_MULTIPLIER = "multiplier"
# The output's NUMERIC(12,2): two decimal places.
CENTS = Decimal("0.01")


class Component(ComponentBase):
    def run(self):
        multiplier = self._multiplier()
        state = self.get_state_file() or {}
        runs = int(state.get("runs", 0)) + 1

        source = self.get_input_table_definition_by_name("input.csv")
        schema = {
            "id": ColumnDefinition(data_types=BaseType.integer(), nullable=False, primary_key=True),
            "name": ColumnDefinition(data_types=BaseType.string()),
            "amount": ColumnDefinition(data_types=BaseType.numeric(length="12,2")),
            "amount_multiplied": ColumnDefinition(data_types=BaseType.numeric(length="12,2")),
        }
        table = self.create_out_table_definition(
            "output.csv",
            destination="out.c-python.output",
            primary_key=["id"],
            schema=schema,
            incremental=False,
            has_header=True,
        )

        rows = 0
        with (
            open(source.full_path, newline="", encoding="utf-8") as src,
            open(table.full_path, "w", newline="", encoding="utf-8") as out,
        ):
            writer = csv.DictWriter(out, fieldnames=list(schema), lineterminator="\n")
            writer.writeheader()
            for row in csv.DictReader(src):
                try:
                    amount = Decimal(row["amount"])
                except InvalidOperation:
                    raise UserException(f"input.csv row {row['id']}: amount {row['amount']!r} is not a number")
                writer.writerow(
                    {
                        "id": row["id"],
                        "name": row["name"],
                        "amount": row["amount"],
                        "amount_multiplied": str((amount * multiplier).quantize(CENTS)),
                    }
                )
                rows += 1

        self.write_manifest(table)
        self.write_state_file({"runs": runs, "rows": rows})
        logging.info("multiplied %d rows by %s (run %d)", rows, multiplier, runs)

    def _multiplier(self) -> Decimal:
        value = self.configuration.parameters.get(KEY_MULTIPLIER)
        # A JSON boolean is an int to Python; it is no multiplier.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserException(f"Parameter '{KEY_MULTIPLIER}' must be a number, got {value!r}")
        return Decimal(str(value))


if __name__ == "__main__":
    try:
        Component().execute_action()
    except UserException as exc:
        logging.exception(exc)
        exit(1)
    except Exception as exc:
        logging.exception(exc)
        exit(2)
