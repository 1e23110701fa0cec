"""The Explorer of the fixture's grids (a helper, not a grid: its name starts with ``_``).

Its table, as a Dora project writes one: metric columns with formats (``tt.leaf(name,
".3f")``), and a row built by ``process_sheep`` from the history, the job and the log.
"""

import treetable as tt

from gridman import Explorer


class MyExplorer(Explorer):
    def get_grid_metrics(self):
        return [
            tt.group("train", [tt.leaf("loss", ".3f"), tt.leaf("epoch")]),
            tt.group("log", [tt.leaf("depth"), tt.leaf("job")]),
        ]

    def get_grid_meta(self):
        return [tt.leaf("index", align=">"), tt.leaf("name"), tt.leaf("state")]

    def process_sheep(self, sheep, history):
        depth = None
        if sheep.log is not None and sheep.log.exists():
            for line in sheep.log.read_text().splitlines():
                if line.startswith("FINAL "):
                    fields = dict(part.split("=", 1) for part in line.split()[1:])
                    depth = int(fields["depth"])
        job = None
        if sheep.job is not None:
            job = f"{sheep.job.state}:{'id' if sheep.job.job_id else 'noid'}"
        train = history[-1]["train"] if history else {}
        return {"train": train, "log": {"depth": depth, "job": job, "nolog": sheep.log is None}}
