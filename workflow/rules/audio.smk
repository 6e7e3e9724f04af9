"""Stage 2, speech → 16 kHz mono int16 WAV: `lipbench convert`."""


rule convert:
    input:
        lambda wc: res(f"{wc.job}/speech{JOBS[wc.job]['suffix']}"),
    output:
        res("{job}/audio.wav"),
    params:
        lipbench=LIPBENCH,
        settings=settings("video"),
    conda:
        ENV
    log:
        res("{job}/logs/convert.log"),
    benchmark:
        res("{job}/benchmarks/convert.tsv")
    shell:
        "{params.lipbench} --config-json {params.settings:q} convert {input} {output} > {log} 2>&1"
