"""The page of ``mmguard report``: one Jinja template, filled by ``report/html.py``'s ``ReportBuilder``."""
from __future__ import annotations


def template():
    import jinja2

    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE)


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
mark { background: #ffd54f; padding: 0 .1em; border-radius: 2px; }
.note { color: #8a4b00; background: #fff6e5; border-left: 3px solid #f0a030; padding: .3em .7em; margin: .5em 0; }
.meta { color: #555; font-size: .9em; } .left li { margin: .2em 0; }
code { background: #f4f4f4; padding: 0 .2em; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">run directory <code>{{ run_dir }}</code> &middot; seed {{ fmt(seed) }}
{% if elapsed is not none %} &middot; run wall time {{ "%.0f"|format(elapsed) }} s{% endif %}
 &middot; report written {{ generated }}</p>
{% for p in problems %}<p class="note">{{ p }}</p>{% endfor %}

<h2 id="protection-left">Protection left under each probe</h2>
<p>delta_acc is clean fine-tuning accuracy minus protected fine-tuning accuracy (same victim, same probe): how much
accuracy the protection takes away. A probe is what an adaptive fine-tuner does to the data to get past it.</p>
<ul class="left">
{% for line in left %}<li>{{ line }}</li>
{% endfor %}
</ul>

<h2 id="accuracy">Accuracy</h2>
{% if not charts %}<p class="note">No results rows to chart.</p>{% endif %}
{% for c in charts %}
<figure><img class="chart chart-{{ c.kind }}" src="{{ c.src }}" alt="{{ c.caption }}">
<figcaption>{{ c.caption }}{% if c.kind != "mix" %} Bars: one per attack, clean (fine-tuned on the clean data) and
zero_shot (no fine-tuning) for reference.{% endif %} <code>{{ c.file }}</code></figcaption></figure>
{% endfor %}

<h2 id="stealth">Stealth</h2>
<table id="stealth-table" class="stealth">
<thead><tr><th>attack</th><th>method</th><th>surrogates</th><th>PSNR (dB)</th><th>SSIM</th>
<th>L-inf max (/255)</th><th>eps_x (/255)</th><th>trigger tokens (mean / max)</th><th>eps_t</th>
<th>trigger words (mean)</th><th>edit distance</th><th>BLEU</th><th>samples</th></tr></thead>
<tbody>
{% for s in stealth %}
<tr class="stealth-row"><td>{{ s.attack }}</td><td>{{ s.method }}</td><td>{{ s.surrogates }}</td>
<td class="num">{{ fmt(s.psnr, 2) }}</td><td class="num">{{ fmt(s.ssim) }}</td><td class="num">{{ fmt(s.linf_255) }}</td>
<td class="num">{{ fmt(s.eps_x_255) }}</td>
<td class="num">{% if s.trigger_tokens_mean is not none %}{{ "%.1f"|format(s.trigger_tokens_mean) }} / {{ s.trigger_tokens_max }}{% else %}-{% endif %}</td>
<td class="num">{{ fmt(s.eps_t) }}</td><td class="num">{{ fmt(s.trigger_words, 1) }}</td>
<td class="num">{{ fmt(s.edit_distance, 2) }}</td><td class="num">{{ fmt(s.bleu) }}</td><td class="num">{{ fmt(s.n) }}</td></tr>
{% endfor %}
</tbody></table>
{% if not stealth %}<p class="note">No attack was run.</p>{% endif %}
<p class="meta">PSNR and SSIM: means over the protected set; L-inf: the largest over it. Trigger tokens are counted
in the first surrogate's tokenizer as inserted (the span the budget eps_t limits); edit distance and BLEU compare
the triggered questions with the clean ones.</p>

<h2 id="attacks">Attacks</h2>
{% if not sections %}<p class="note">No protected data sets in this run directory.</p>{% endif %}
{% for s in sections %}
<section class="attack" id="attack-{{ s.label }}">
<h3>{{ s.label }}{% if s.method != s.label %} ({{ s.method }}){% endif %}</h3>
<p class="meta">surrogates: {{ s.surrogates or "-" }}</p>
{% for n in s.notes %}<p class="note">{{ n }}</p>{% endfor %}
{% if s.grid %}
<figure><img class="grid" src="{{ s.grid.src }}" alt="image grid {{ s.label }}">
<figcaption>Clean original, released (protected) image, and the perturbation amplified so that it is visible.
<code>{{ s.grid.file }}</code></figcaption></figure>
{% endif %}
<h4>Triggered questions</h4>
<table class="questions">
<thead><tr><th>id</th><th>clean question</th><th>protected question (trigger marked)</th><th>answer</th></tr></thead>
<tbody>
{% for q in s.questions %}
<tr><td>{{ q.id }}</td><td>{{ q.clean if q.clean is not none else "-" }}</td>
<td>{% if q.parts %}{{ q.parts[0] }}{% if q.parts[1] %}<mark>{{ q.parts[1] }}</mark>{% endif %}{{ q.parts[2] }}{% else %}-{% endif %}</td>
<td>{{ q.answer or "-" }}</td></tr>
{% endfor %}
</tbody></table>
{% if attention %}
<h4>Answer-to-image attention</h4>
{% if s.attention %}
{% if s.mass_line %}<p>{{ s.mass_line }}</p>{% endif %}
<figure><img class="attention" src="{{ s.attention.src }}" alt="attention maps {{ s.label }}">
<figcaption>Attention of the answer tokens on the image tokens in language-model layer {{ layer }} of the
surrogate {{ s.surrogate_spec }} before any adaptation, averaged over heads and answer tokens and painted onto the
image ({{ s.attention_mapping }}). "on image": the answer rows' total attention mass on image tokens;
"trigger": on the trigger tokens. <code>{{ s.attention.file }}</code></figcaption></figure>
{% else %}
<p class="note">{{ s.attention_error }}</p>
{% endif %}
{% endif %}
</section>
{% endfor %}

<h2 id="results">All results ({{ n_rows }} rows)</h2>
<table class="results">
<thead><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{% for r in table %}<tr>{% for v in r %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}
</tbody></table>
</body>
</html>
"""
