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
    conda:
        ENV
    log:
        res("{job}/logs/tts.log"),
    benchmark:
        res("{job}/benchmarks/tts.tsv")
    shell:
        "{params.lipbench} --config-json {params.settings:q} tts --text {params.text:q} --lang {params.lang:q} --engine {params.engine}"
        " --out {output.speech} > {output.info} 2> {log}"


use rule tts as tts_online with:
    # gTTS (online) returns MP3; the same step under another output name.
    output:
        speech=res("{job}/speech.mp3"),
        info=res("{job}/tts.json"),
    wildcard_constraints:
        job=id_regex(j for j, job in JOBS.items() if job["suffix"] == ".mp3"),
