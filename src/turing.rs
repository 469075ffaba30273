//! The visual Turing test page (the paper's: subjects told refined from real eyes 517 times in
//! 1,000, chance; 162 in 200 for raw synthetic ones): one self-contained HTML file, every image
//! embedded as a PNG data URI, that shows a person the images one at a time in an order shuffled
//! afresh on every load, takes an answer per image ("real" / "refined"; buttons or the R and F
//! keys), and ends with their accuracy, the count, and the two-sided exact binomial p-value
//! against chance (p = 0.5). The answers (image id, truth, answer, milliseconds) download as JSON;
//! the same document is on `window.turingAnswers` for scripts.
//!
//! Element ids a script can drive and read: `#image`, `#answer-real`, `#answer-refined`,
//! `#progress`, and at the end `#result` with `#correct`, `#total`, `#accuracy`, `#p-value` and
//! `#download` (a `data:application/json` link).

use std::fmt::Write as _;

use base64::Engine as _;

use crate::charts::esc;
use crate::error::Result;
use crate::sample::SampleImage;

/// One image on the page.
pub struct TuringImage {
    /// Sample id (recorded with the answer).
    pub id: String,
    /// Whether the image is real (else refined).
    pub real: bool,
    /// The image.
    pub image: SampleImage,
}

/// Two-sided exact binomial test of `k` successes in `n` trials against p = 1/2: the total
/// probability of every outcome no more likely than `k` (the page computes the same in script).
pub fn binomial_p_two_sided(k: u64, n: u64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    // log C(n, i) − n log 2, for i = 0..=n.
    let mut logp = Vec::with_capacity(n as usize + 1);
    let mut lc = 0.0f64;
    for i in 0..=n {
        if i > 0 {
            lc += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        logp.push(lc - n as f64 * std::f64::consts::LN_2);
    }
    let obs = logp[k.min(n) as usize];
    let p: f64 = logp
        .iter()
        .filter(|&&l| l <= obs + 1e-9)
        .map(|l| l.exp())
        .sum();
    p.min(1.0)
}

/// `s` as a JSON string that is safe inside a `<script>` element (no `<`, so no `</script>`).
fn script_json(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap_or_else(|_| "\"\"".into())
        .replace('<', "\\u003c")
}

/// The page for `images` (`title` names the run in its heading).
pub fn page(images: &[TuringImage], title: &str) -> Result<String> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut items = String::from("[");
    for (i, t) in images.iter().enumerate() {
        let png = t.image.encode_png("turing page")?;
        if i > 0 {
            items.push(',');
        }
        let id = script_json(&t.id);
        let _ = write!(
            items,
            "{{\"id\":{id},\"truth\":\"{}\",\"src\":\"data:image/png;base64,{}\"}}",
            if t.real { "real" } else { "refined" },
            engine.encode(&png)
        );
    }
    items.push(']');
    let (w, h) = images
        .first()
        .map(|t| (t.image.width, t.image.height))
        .unwrap_or((1, 1));
    // Shown at a fixed on-screen size, up to 6× the stored pixels, unsmoothed.
    let scale = (480 / w.max(1)).clamp(1, 6);
    let n_real = images.iter().filter(|t| t.real).count();
    let mut h_out = String::new();
    let _ = write!(
        h_out,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Visual Turing test</title>
<style>body{{font-family:sans-serif;max-width:720px;margin:2em auto;color:#222;text-align:center}}
#image{{width:{pw}px;height:{ph}px;image-rendering:pixelated;border:1px solid #ccc}}
button{{font-size:1.2em;margin:1em;padding:0.5em 1.5em}}#result{{font-size:1.2em}}</style></head><body>
<h1>Visual Turing test</h1>
<p>{title}: {n} images, {n_real} real and {n_refined} refined, in random order. For each image, answer whether it is a <b>real</b> image or a <b>refined</b> (synthetic) one. Keys: R = real, F = refined.</p>
<div id="test"><p id="progress"></p><img id="image" alt="image to judge"><br>
<button id="answer-real" type="button">Real (R)</button><button id="answer-refined" type="button">Refined (F)</button></div>
<div id="result" hidden><p>You answered <b id="correct"></b> of <b id="total"></b> correctly: <b id="accuracy"></b> % (chance: 50 %).</p>
<p>Two-sided binomial p-value against chance: <b id="p-value"></b> (small values mean you can tell them apart).</p>
<p><a id="download" download="turing-answers.json">Download the answers (JSON)</a></p></div>
<script>
var items={items};
function shuffle(a){{for(var i=a.length-1;i>0;i--){{var j=Math.floor(Math.random()*(i+1));var t=a[i];a[i]=a[j];a[j]=t;}}return a;}}
function binomP(k,n){{if(n===0)return 1;var lp=[],lc=0;for(var i=0;i<=n;i++){{if(i>0)lc+=Math.log(n-i+1)-Math.log(i);lp.push(lc-n*Math.LN2);}}var o=lp[k],p=0;for(var j=0;j<=n;j++){{if(lp[j]<=o+1e-9)p+=Math.exp(lp[j]);}}return Math.min(1,p);}}
var order=shuffle(items.slice()),pos=0,answers=[],shown=0;
function show(){{if(pos>=order.length){{finish();return;}}document.getElementById('progress').textContent='Image '+(pos+1)+' of '+order.length;document.getElementById('image').src=order[pos].src;shown=Date.now();}}
function answer(a){{if(pos>=order.length)return;var it=order[pos];answers.push({{index:pos,id:it.id,truth:it.truth,answer:a,correct:a===it.truth,ms:Date.now()-shown}});pos++;show();}}
function finish(){{var c=answers.filter(function(x){{return x.correct;}}).length,n=answers.length,p=binomP(c,n);
document.getElementById('test').hidden=true;document.getElementById('result').hidden=false;
document.getElementById('correct').textContent=c;document.getElementById('total').textContent=n;
document.getElementById('accuracy').textContent=(n?100*c/n:0).toFixed(1);document.getElementById('p-value').textContent=p.toPrecision(3);
var doc={{page:{title_json},correct:c,total:n,accuracy:n?c/n:0,p_value:p,answers:answers}};window.turingAnswers=doc;
document.getElementById('download').href='data:application/json;charset=utf-8,'+encodeURIComponent(JSON.stringify(doc,null,1));}}
document.getElementById('answer-real').addEventListener('click',function(){{answer('real');}});
document.getElementById('answer-refined').addEventListener('click',function(){{answer('refined');}});
document.addEventListener('keydown',function(e){{if(e.key==='r'||e.key==='R')answer('real');if(e.key==='f'||e.key==='F')answer('refined');}});
show();
</script></body></html>"#,
        pw = w * scale,
        ph = h * scale,
        title = esc(title),
        n = images.len(),
        n_refined = images.len() - n_real,
        title_json = script_json(title),
    );
    Ok(h_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_p_values() {
        // Symmetric: 50 of 100 is the most likely outcome.
        assert!((binomial_p_two_sided(50, 100) - 1.0).abs() < 1e-9);
        // 0 or 10 of 10: 2 / 1024.
        assert!((binomial_p_two_sided(0, 10) - 2.0 / 1024.0).abs() < 1e-12);
        assert!((binomial_p_two_sided(10, 10) - 2.0 / 1024.0).abs() < 1e-12);
        // 8 of 10: P(k ≤ 2) + P(k ≥ 8) = 2 · (1 + 10 + 45) / 1024.
        assert!((binomial_p_two_sided(8, 10) - 112.0 / 1024.0).abs() < 1e-12);
        // The paper's raw-synthetic result, 162 of 200, is far from chance.
        assert!(binomial_p_two_sided(162, 200) < 1e-15);
        assert_eq!(binomial_p_two_sided(0, 0), 1.0);
    }

    #[test]
    fn page_embeds_every_image_once() {
        let img = SampleImage::from_gray(image::GrayImage::from_pixel(4, 3, image::Luma([9])));
        let images: Vec<TuringImage> = (0..6)
            .map(|i| TuringImage {
                id: format!("s{i}\"<"),
                real: i % 2 == 0,
                image: img.clone(),
            })
            .collect();
        let html = page(&images, "run <x>").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(html.matches("data:image/png;base64,").count(), 6);
        assert_eq!(html.matches("\"truth\":\"real\"").count(), 3);
        assert!(html.contains("run &lt;x&gt;") && html.contains(r#""s0\"\u003c""#));
        assert!(!html.contains("s0\\\"<"));
    }
}
