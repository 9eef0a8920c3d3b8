"""Streamlit Space: paste a Korean paragraph, get recommended questions about it.

    streamlit run space/app.py                                   # the published adapter (GPU if present, else CPU)
    QG_MODEL=tiny-random-exaone streamlit run space/app.py       # offline, the tiny random model: gibberish, fast
    QG_MODEL=outputs/smoke streamlit run space/app.py            # a local adapter folder
    QG_CPU_MODEL=exports/exaone-ct2 streamlit run space/app.py   # without a GPU: a CTranslate2 export (or Hub id)

The Space repository holds this file next to a copy of the `qg/` package; all logic lives in
`qg.generate.QuestionGenerator`, this file only draws the page. Without a GPU, a CTranslate2 int8 export of the same
adapter (`qg-export --ctranslate2`, named by QG_CPU_MODEL) answers in 25-45 s where transformers in fp32 took 60-285 s
(bench/bench_space_cpu.py); the prompt, checks, de-duplication and resampling are the same QuestionGenerator code.
The model loads in a background thread: the page draws at once, and a request before it is ready is told to wait.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import streamlit as st
import torch

from qg.cli import UserError
from qg.generate import DUPLICATE, NO_EOS, QuestionGenerator
from qg.quality import (BROKEN_TEXT, CONTEXT_COPY, EMPTY, MARKDOWN, NO_HANGUL, REPETITION, ROLE_TAG, TOO_LONG,
                        TOO_SHORT)

# The published Space sets QG_MODEL (a Space variable) to its adapter; this default is README.md's first model.
PUBLISHED_ADAPTER = "ORG/exaone-3.5-2.4b-korquad-qg-lora"
MODEL_ID = os.environ.get("QG_MODEL", PUBLISHED_ADAPTER)
# On CPU hardware: a CTranslate2 export of the adapter, a folder or a Hub repo id (unset: transformers on CPU too).
CPU_MODEL = os.environ.get("QG_CPU_MODEL") or None
# A GPU Space keeps transformers (bf16, the adapter as published); CTranslate2's int8 is for CPU hardware.
CPU_ENGINE = CPU_MODEL is not None and not torch.cuda.is_available()
# About 2,700 EXAONE tokens of Korean: past the model's 1,024-token budget, so the cap cuts only what it would not
# read anyway, and a pasted book never reaches the tokenizer.
MAX_PARAGRAPH_CHARS = 5000
LOADING_MESSAGE = "모델을 불러오는 중입니다. 잠시 후 다시 시도해 주세요. (The model is still loading; try again shortly.)"

# Original paragraphs written for this app (not from KorQuAD or any other source).
EXAMPLES = {
    "한글 (Hangul)": (
        "한글은 1443년 세종이 백성이 쉽게 글을 익히도록 만든 문자로, 처음에는 훈민정음이라고 불렸다. "
        "자음은 소리를 낼 때 발음 기관의 모양을 본떠 만들었고, 모음은 하늘과 땅과 사람을 뜻하는 세 획을 "
        "조합해 만들었다. 1446년에 해례본과 함께 반포되었으며, 오늘날 10월 9일은 이를 기념하는 한글날이다."
    ),
    "제주 감귤 (Jeju tangerines)": (
        "제주도는 겨울에도 기온이 비교적 따뜻하고 물이 잘 빠지는 화산토가 많아 감귤 농사에 알맞다. "
        "감귤은 보통 11월부터 이듬해 2월까지 수확하며, 껍질이 얇고 새콤달콤한 맛으로 사랑받는다. "
        "최근에는 하우스 재배가 늘어 한라봉과 천혜향 같은 만감류도 봄까지 맛볼 수 있게 되었다."
    ),
    "반도체 (Semiconductors)": (
        "반도체는 전기가 잘 통하는 도체와 통하지 않는 부도체의 중간 성질을 가진 물질이다. 대표적인 재료인 "
        "실리콘에 불순물을 조금 넣으면 전기가 흐르는 정도를 조절할 수 있는데, 이를 도핑이라고 한다. "
        "이렇게 만든 트랜지스터 수십억 개를 손톱만 한 칩에 새긴 것이 스마트폰과 컴퓨터의 두뇌 역할을 한다."
    ),
    "김장 (Kimjang)": (
        "김장은 겨울을 나기 위해 늦가을에 많은 양의 김치를 한꺼번에 담그는 풍습이다. 배추를 소금물에 절인 뒤 "
        "고춧가루, 마늘, 젓갈 등으로 만든 소를 넣어 버무리며, 이웃과 가족이 모여 함께 일하는 경우가 많다. "
        "김장 문화는 2013년 유네스코 인류무형문화유산에 등재되었다."
    ),
}

# Why sampled questions were dropped, for people: the codes of `qg.quality.rejection_reason` and `qg.generate`.
REJECTION_LABELS = {
    NO_EOS: "길이 제한까지 끝맺지 못함 (no end of turn)",
    DUPLICATE: "앞의 질문과 거의 같음 (near-duplicate)",
    EMPTY: "빈 출력 (empty)",
    BROKEN_TEXT: "깨진 글자 포함 (broken characters)",
    ROLE_TAG: "대화 역할 태그 포함 (role tag such as [|assistant|])",
    MARKDOWN: "마크다운 기호 포함 (markdown: ###, ```, **)",
    REPETITION: "같은 말 반복 (repetition)",
    NO_HANGUL: "한글 없음 (no Hangul)",
    TOO_SHORT: "너무 짧음 (too short)",
    TOO_LONG: "너무 긺 (too long)",
    CONTEXT_COPY: "문단의 문장을 그대로 옮김 (copies a sentence of the paragraph)",
}


def load_generator(model_id: str, cpu_model: str | None) -> QuestionGenerator:
    """The CTranslate2 model `cpu_model` when given, else the transformers + peft model `model_id`."""
    if cpu_model is not None:
        from qg.serving.ctranslate2 import CTranslate2Engine, local_model_folder

        return QuestionGenerator(CTranslate2Engine(local_model_folder(cpu_model)))
    return QuestionGenerator.from_pretrained(model_id, device="auto")


class BackgroundLoad:
    """`load()` run in a thread; `result()` is its generator, None while it runs, or raises what it raised."""

    def __init__(self, load: Callable[[], QuestionGenerator]):
        self.generator: QuestionGenerator | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(load,), name="load-model", daemon=True)
        self.thread.start()

    def _run(self, load: Callable[[], QuestionGenerator]) -> None:
        try:
            self.generator = load()
        except BaseException as err:  # noqa: BLE001 - shown on the page by the next run, not lost in the thread
            self.error = err

    def result(self) -> QuestionGenerator | None:
        if self.error is not None:
            raise self.error
        return self.generator


@st.cache_resource(show_spinner=False)
def start_loading(model_id: str, cpu_model: str | None) -> BackgroundLoad:
    """One load per process, shared by every visitor."""
    return BackgroundLoad(lambda: load_generator(model_id, cpu_model))


@st.fragment(run_every=1.0)
def show_loading(loading: BackgroundLoad) -> None:
    """The loading notice, checked every second: the page redraws itself once the model is ready (or failed)."""
    if loading.generator is not None or loading.error is not None:
        st.rerun()
    st.caption(f"⏳ {LOADING_MESSAGE}")


def engine_label(generator: QuestionGenerator) -> str:
    details = generator.engine.describe()
    if details["engine"] == "ctranslate2":
        return f"CTranslate2 {details['compute_type']} · {details['device']}"
    return f"transformers · {generator.model.device.type}"


def use_example() -> None:
    st.session_state.paragraph = EXAMPLES[st.session_state.example]


def show_rejections(rejected) -> None:
    lines = [f"- {REJECTION_LABELS.get(reason, reason)}: {count}개" for reason, count in rejected.most_common()]
    st.markdown("\n".join(lines))


st.set_page_config(page_title="한국어 추천 질문 생성", page_icon="❓")
st.title("❓ 한국어 추천 질문 생성")
st.markdown(
    "문단을 넣으면 그 내용으로 답할 수 있는 질문을 만들어 드립니다.  \n"
    "*Paste a Korean paragraph and get questions a reader could ask about it "
    "(EXAONE-3.5-2.4B + LoRA, fine-tuned on KorQuAD 1.0).*"
)

loading = start_loading(MODEL_ID, CPU_MODEL if CPU_ENGINE else None)
try:
    generator = loading.result()
except UserError as err:
    st.error(f"모델을 불러오지 못했습니다 (could not load the model): {err}")
    st.stop()
if generator is None:
    show_loading(loading)
else:
    st.caption(f"모델 (model): `{CPU_MODEL if CPU_ENGINE else MODEL_ID}` · 엔진 (engine): `{engine_label(generator)}`")

st.session_state.setdefault("paragraph", next(iter(EXAMPLES.values())))
st.selectbox("예시 문단 (example paragraph)", list(EXAMPLES), key="example", on_change=use_example)

with st.form("generate"):
    paragraph = st.text_area("문단 (paragraph)", key="paragraph", height=200, max_chars=MAX_PARAGRAPH_CHARS,
                             placeholder="질문을 만들 한국어 문단을 붙여 넣으세요.",
                             help=f"최대 {MAX_PARAGRAPH_CHARS:,}자까지 넣을 수 있습니다 (at most "
                                  f"{MAX_PARAGRAPH_CHARS:,} characters).")
    answer = st.text_input("답 (선택) · answer span, optional",
                           help="문단 속의 답을 적으면 그 답이 나오는 질문을 만듭니다 (answer-aware mode).")
    num_questions = st.slider("질문 개수 (number of questions)", 1, 10, 5)
    temperature = st.slider("창의성 (temperature)", 0.1, 1.5, 0.8, step=0.1,
                            help="낮을수록 무난하고, 높을수록 다양하지만 엉뚱한 질문이 늘어납니다. "
                                 + ("" if CPU_ENGINE else "같은 문단과 설정은 같은 질문을 냅니다 (seeded)."))
    submitted = st.form_submit_button("질문 만들기 (generate)", type="primary")

if submitted:
    answer = answer.strip() or None
    if not paragraph.strip():
        st.info("문단이 비어 있습니다. 위에 한국어 문단을 넣거나 예시를 골라 주세요. (The paragraph is empty.)")
        st.stop()
    generator = loading.result()  # it may have finished since the page was drawn
    if generator is None:
        st.info(LOADING_MESSAGE)
        st.stop()
    if len(paragraph) == MAX_PARAGRAPH_CHARS:  # Streamlit cuts a longer paste to max_chars without a word
        st.warning(f"문단은 {MAX_PARAGRAPH_CHARS:,}자까지 받습니다. 그 뒤는 잘렸을 수 있습니다. "
                   f"(Paragraphs are cut at {MAX_PARAGRAPH_CHARS:,} characters.)")
    if answer is not None and answer not in paragraph:
        st.warning("적은 답이 문단에 없습니다. 그래도 질문을 만들어 봅니다. (The answer is not in the paragraph.)")
    with st.spinner("질문을 만드는 중입니다… (generating)"):
        started = time.perf_counter()
        [result] = generator.generate([paragraph], num_questions=num_questions,
                                      answers=None if answer is None else [answer], temperature=temperature)
        elapsed = time.perf_counter() - started
    if result.truncated:
        st.warning(f"문단이 길어서 앞부분 약 {generator.max_context_tokens} 토큰만 사용했습니다. "
                   "(The paragraph was truncated to the model's input budget.)")
    if result.questions:
        st.subheader("추천 질문 (questions)")
        for number, question in enumerate(result.questions, start=1):
            st.markdown(f"**{number}.**")
            # A code block shows the text as is (never as HTML) and has a copy button.
            st.code(question, language=None, wrap_lines=True)
        st.caption(f"⏱ {elapsed:.1f}초 · 질문 {len(result.questions)}개 / 요청 {num_questions}개")
        if result.rejected:
            with st.expander("품질 검사에서 걸러진 질문 (filtered out)"):
                show_rejections(result.rejected)
    else:
        st.warning("아쉽게도 품질 검사를 통과한 질문이 없습니다. 창의성을 낮추거나 문단을 바꿔 다시 시도해 보세요. "
                   "(No question passed the quality checks; try a lower temperature or another paragraph.)")
        st.caption(f"⏱ {elapsed:.1f}초 · 걸러진 이유 (why they were dropped):")
        show_rejections(result.rejected)
