"""Stage 1, text → speech: `lipbench tts` with the job's engine and language."""


rule tts:
    """Offline engines (piper, espeak-ng; `auto` picks one) write WAV."""
    output:
        speech=res("{job}/speech.wav"),
        info=res("{job}/tts.json"),
    wildcard_constraints:
        job=id_regex(j for j, job in JOBS.items() if job["suffix"] == ".wav"),
    params:
        lipbench=LIPBENCH,
        settings=settings("text", "tts"),
        text=lambda wc: JOBS[wc.job]["text"],
        lang=lambda wc: JOBS[wc.job]["lang"],
        engine=lambda wc: JOBS[wc.job]["engine"],
        benchmark=lambda wc: res(f"{wc.job}/benchmarks/tts.tsv"),
    conda:
        ENV
    log:
        res("{job}/logs/tts.log"),
    benchmark:
        res("{job}/benchmarks/tts.tsv")
    shell:
        # The previous run's benchmark goes first (Snakemake leaves it until the step ends),
        # so a killed attempt cannot pass an older run's TTS time to the merge. The log gets
        # what was asked, lipbench's messages, and what the engine reported (tts.json).
        "rm -f {params.benchmark} && "
        'echo "tts: engine {params.engine}, language {params.lang}, host $(hostname),'
        ' SLURM job ${{SLURM_JOB_ID:-none}}" > {log} && '
        "{params.lipbench} --config-json {params.settings:q} tts --text {params.text:q} --lang {params.lang:q} --engine {params.engine}"
        " --out {output.speech} > {output.info} 2>> {log} && "
        'echo "wrote {output.speech}: $(cat {output.info})" >> {log}'


use rule tts as tts_online with:
    # gTTS (online) returns MP3; the same step under another output name. It runs where
    # Snakemake runs (`localrule`): cluster nodes often have no internet access.
    output:
        speech=res("{job}/speech.mp3"),
        info=res("{job}/tts.json"),
    wildcard_constraints:
        job=id_regex(j for j, job in JOBS.items() if job["suffix"] == ".mp3"),
    localrule: True
