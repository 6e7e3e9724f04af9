"""The benchmark report: the sweep notebook measures (→ results/bench/sweep.csv and its
sidecars), the report notebook charts it, nbconvert renders HTML. Not part of `all`: run
`snakemake --cores 2 report`. The grid is the config's `sweep:` section, e.g.
`snakemake --cores 2 report --config 'sweep={durations: [2, 5], max_pairs: 3}'`: the sweep rule
writes the effective config to results/bench/sweep_config.json and passes it as
`-p config_path` (a changed section re-runs the sweep). A machine too busy to measure is not
an error: the report then says "not measurable" in place of a speed-up.
Notebooks are papermill-parameterised (a cell tagged `parameters`); the notebooks are read
from the repository even when the workflow runs elsewhere (`-d`)."""

NOTEBOOKS = REPO / "notebooks"


rule sweep:
    input:
        notebook=str(NOTEBOOKS / "sweep.ipynb"),
    output:
        csv=res("bench/sweep.csv"),
        notebook=res("report/sweep.ipynb"),
        config=res("bench/sweep_config.json"),
    params:
        papermill=PAPERMILL,
        # The whole validated config but the jobs (JSON is YAML: `lipbench --config` reads it).
        config=json.dumps({k: v for k, v in config.items() if k != "jobs"}, sort_keys=True),
    conda:
        ENV
    log:
        res("logs/sweep.log"),
    shell:
        "printf '%s\\n' {params.config:q} > {output.config} && "
        "{params.papermill} {input.notebook:q} {output.notebook} --no-progress-bar"
        " -p out_csv {output.csv} -p config_path {output.config} > {log} 2>&1"


rule report:
    input:
        notebook=str(NOTEBOOKS / "report.ipynb"),
        csv=rules.sweep.output.csv,
    output:
        html=res("report/report.html"),
        notebook=res("report/report.ipynb"),
    params:
        papermill=PAPERMILL,
        nbconvert=NBCONVERT,
        out_dir=lambda wc, output: str(Path(output.html).parent),
    conda:
        ENV
    log:
        res("logs/report.log"),
    shell:
        "{params.papermill} {input.notebook:q} {output.notebook} --no-progress-bar"
        " -p sweep_csv {input.csv} -p out_dir {params.out_dir} > {log} 2>&1 && "
        "{params.nbconvert} --to html --no-input --output-dir {params.out_dir} --output report"
        " {output.notebook} >> {log} 2>&1"
