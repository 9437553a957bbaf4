"""A fact stated as a sentence, turned into a question and answer (tunechat.core.facts)."""

from __future__ import annotations

import pytest

from tunechat.core.facts import (
    FactPair,
    as_sentence,
    base_form,
    clauses,
    details_of,
    first_person,
    looks_like_fact,
    pair_from_fact,
    questions_from_answer,
    rejection,
    said_back,
    second_person,
    shots,
    tidy,
)


def test_details_are_the_names_numbers_and_dates():
    assert details_of("My cousin Inès flies to New York on 14 March at 6:45.") == ["Inès", "New York", "14 March",
                                                                                 "6:45"]
    assert details_of("I renewed my library card on 3/11/1988, number 07700 900123.") == ["3/11/1988",
                                                                                         "07700 900123"]
    assert details_of("I finished 9th in the race on the 2nd of October.") == ["9th", "2nd of October"]
    assert details_of("September 30th is our anniversary.") == ["September 30th"]
    # Not details: the sentence's first word, "I", a title, a plain lower-case word.
    assert details_of("Yesterday I saw Dr. Haas. Tomorrow I rest.") == ["Haas"]
    assert details_of("I am allergic to cats.") == []
    assert details_of("Мой брат живёт в Казани.") == ["Казани"]  # capitals in any script with case


def test_a_statement_without_an_answer_looks_like_a_fact():
    assert looks_like_fact("My neighbour's parrot is called Kiwi.")
    assert looks_like_fact("I quit smoking in 2020", "")
    assert not looks_like_fact("What is my parrot called?")
    assert not looks_like_fact("My parrot is called what？")
    assert not looks_like_fact("¿Cómo se llama mi loro")
    assert not looks_like_fact("where do I keep my passport")  # a question without its mark
    assert not looks_like_fact("My parrot is called Kiwi.", "Kiwi")  # an answer was given
    assert not looks_like_fact("Kiwi")


def test_second_person_swaps_the_speaker_only():
    assert second_person("I'm moving to Rome and my sister is staying with me.") == (
        "You're moving to Rome and your sister is staying with you.")
    assert second_person("I am sure it is mine. We met in the US at 7 am.") == (
        "You are sure it is yours. You met in the US at 7 am.")


def test_the_check_rejects_a_pair_that_loses_a_detail():
    sentence = "I moved to Porto in 2023."
    assert rejection(sentence, "Where did I move in 2023?", "You moved to Porto in 2023.") is None
    assert rejection(sentence, "Where did I move in 2023?", "You moved to Porto.") == "the answer drops 2023"
    assert rejection(sentence, "Where did I move in 2023?", "You moved to Lisbon in 2023.") == (
        "the answer drops Porto")
    assert rejection(sentence, "Where did I move in 2023", "You moved to Porto in 2023.") == (
        "the question does not end with a question mark")
    assert rejection(sentence, "I moved to Porto in 2023?", "You moved to Porto in 2023.") == (
        "the question is the sentence itself")
    assert rejection(sentence, "Did I move to Porto in 2023?", "You moved to Porto in 2023.") == (
        "the question gives the answer away")
    assert rejection(sentence, "Where did I move in 2023?", "I moved to Porto in 2023.") == (
        "the answer is in the first person")
    assert rejection(sentence, "Where did I move in 2021?", "You moved to Porto in 2023.") == (
        "the question brings in 2021")


def test_the_check_reads_meaning_words_and_people():
    sentence = "My uncle keeps bees in Tarragona."
    assert rejection(sentence, "What does my uncle keep?", "Your uncle keeps bees in Tarragona.") is None
    assert rejection(sentence, "What does my uncle keep?", "Your uncle lives in Tarragona.") == (
        "the answer drops keeps, bees")
    assert rejection(sentence, "What does my aunt keep?", "Your uncle keeps bees in Tarragona.") == (
        "the question is about somebody else")
    assert rejection(sentence, "What is my uncle's name?", "Your uncle keeps bees in Tarragona.") == (
        "the question asks for a name the answer does not give")
    assert rejection(sentence, "What is my uncle's favorite hobby?", "Your uncle keeps bees in Tarragona.") == (
        "the question brings in favorite, hobby")
    assert rejection("I'm 41.", "What's my age?", "You're 41.") is None  # "what's" asks, as "what" does
    assert rejection("I'm learning Welsh.", "What's my name?", "You're learning Welsh.") == (
        "the question asks for your name, which the sentence does not give")
    assert rejection("I'm Ilona.", "What is my name?", "You're Ilona.") is None
    sentence, answer = "My friend Kenji is getting married in Osaka next October.", (
        "Your friend Kenji is getting married in Osaka next October.")
    assert rejection(sentence, "What is my friend Kenji's name?", answer) == "the question asks for a name it holds"
    assert rejection(sentence, "What is my friend's name?", answer) is None
    assert rejection(sentence, "Who does my friend Kenji marry?", answer) is None  # asks about him, not his name
    assert rejection("I'm 170 cm tall.", "How tall is I?", "You're 170 cm tall.") == (
        "the question's verb does not go with I")
    assert rejection("I met Ana in 2010.", "When did I meet Ana?", "You met Ana in 2010.") is None  # met: meet


def test_the_check_reads_notes_and_asks_about_the_user():
    # A note without an English function word is checked once its pair is English.
    assert rejection("lactose intolerant.", "What is my cat's age?", "You are lactose intolerant.") == (
        "the question is about somebody else")
    assert rejection("Born 14 March 1987 in Leeds.", "What is your birthdate?", "Born 14 March 1987 in Leeds.") == (
        "the question is not in the first person")
    # A unit written with its number asks as a word of the sentence.
    assert rejection("I take 50mg of sertraline every morning.", "How many mg of sertraline do I take every day?",
                     "You take 50mg of sertraline every morning.") is None
    # Days joined by "and" are no names; "What is my X?" needs an answer that says what X is.
    assert rejection("gym on Mondays and Thursdays at 6:30am.", "What is my gym's name?",
                     "Your gym is on Mondays and Thursdays at 6:30am.") == (
        "the question asks for a name the answer does not give")
    assert rejection("My passport expires on 14/02/2031.", "What is my passport?",
                     "Your passport expires on 14/02/2031.") == "the answer does not say what your passport is"
    assert rejection("My flat is on the 4th floor.", "What is my flat?", "Your flat is on the 4th floor.") == (
        "the answer does not say what your flat is")  # it says where it is
    assert rejection("I take 5mg of ramipril for my heart rate.", "What is my heart rate?",
                     "You take 5mg of ramipril for your heart rate.") == (
        "the answer does not say what your heart rate is")
    # A detail is held as whole words: the "D" of "vitamin D" is not in "do".
    assert rejection("I take vitamin D for my bones.", "What do I take for my bones?",
                     "You take vitamin D for your bones.") is None
    # Whom a sentence mentions in passing need not be asked about.
    assert rejection("I support Everton, have done since I was a kid.", "What do I support?",
                     "You support Everton, have done since you were a kid.") is None


def test_a_past_form_has_a_base_form():
    assert [base_form(v) for v in ["moved", "stopped", "studied", "graduated", "travelled", "called", "joined",
                                   "divorced", "died", "went", "met", "played"]] == [
        "move", "stop", "study", "graduate", "travel", "call", "join", "divorce", "die", "go", "meet", "play"]


def test_a_note_is_said_back_as_a_sentence():
    assert said_back("rent is $1,450 a month.") == "Your rent is $1,450 a month."
    assert said_back("Born in Riga on 2 May 1990.") == "You were born in Riga on 2 May 1990."
    assert said_back("Flying to Oslo on the 3rd.") == "You are flying to Oslo on the 3rd."
    assert said_back("Biscuit is my dog.") == "Biscuit is your dog."  # a name, not a note
    assert said_back("vegan since 2015") == "You have been vegan since 2015"
    assert said_back("been vegan since 2015") == "You have been vegan since 2015"  # not "been been"
    assert said_back("school run on weekdays at 8:15") == "Your school run is on weekdays at 8:15"
    assert said_back("piano lessons are on Fridays.") == "Your piano lessons are on Fridays."
    assert said_back("Tom Jones is my neighbour.") == "Tom Jones is your neighbour."
    # A note opening with a verb in the present, or a negation, is said with "You".
    assert said_back("hate mushrooms.") == "You hate mushrooms."
    assert said_back("work from home on Fridays.") == "You work from home on Fridays."
    assert said_back("can't swim.") == "You can't swim."
    assert said_back("love of my life is Sam.") == "Love of your life is Sam."  # "love" is no verb before "of"


def test_rules_ask_by_grammar():
    assert questions_from_answer("You don't like olives.") == ["What don't I like?"]
    assert questions_from_answer("You drive a 2016 Volvo.") == ["What do I drive?"]
    # An adverb before the verb is no verb to ask with ("What do I just?"): the question leaves
    # it out; "never" is not one of them, as it turns the fact around.
    assert questions_from_answer("You just adopted a puppy.") == ["What did I adopt?"]
    assert questions_from_answer("You already own a kayak.") == ["What do I own?"]
    assert questions_from_answer("You never eat meat.") == []
    assert questions_from_answer("You're learning Welsh on Duolingo.") == ["What am I learning?"]
    assert questions_from_answer("You're moving to Madrid next year.") == ["Where am I moving?"]
    assert questions_from_answer("Your brother lives in Canada.") == ["Where does my brother live?"]
    assert questions_from_answer("Your mortgage is 1,200 a month.") == ["What is my mortgage?"]
    # A past form asks with "did" and its base form, "when" where a time follows.
    assert questions_from_answer("You moved into a flat on Elm Street in 2019.") == [
        "When did I move into a flat on Elm Street?", "Where did I move?"]
    assert questions_from_answer("You met your wife at college last year.") == ["When did I meet my wife at college?"]
    assert questions_from_answer("Your father retired in March.") == ["When did my father retire?"]
    assert questions_from_answer("You've been vegan since 2015.") == ["How long have I been vegan?"]
    assert questions_from_answer("You're left-handed and you're 170 cm tall.") == ["How tall am I?"]
    assert questions_from_answer("You honestly can't stand olives.") == ["What can't I stand?"]
    assert questions_from_answer("Your yoga classes are on Wednesdays.") == ["When are my yoga classes?"]
    assert questions_from_answer("Your sister is called Mia.") == ["What is my sister called?"]
    assert questions_from_answer("Your flatmates are Jo and Sam.") == ["Who are my flatmates?",
                                                                        "What are my flatmates?"]
    assert questions_from_answer("Your favourite film is Alien.") == ["What is my favourite film?"]
    assert questions_from_answer("You're on 5mg of ramipril for your heart.") == ["What am I on for my heart?"]
    assert questions_from_answer("You were diagnosed with asthma in 2015.") == ["When was I diagnosed with asthma?"]
    assert questions_from_answer("You studied law at Durham.") == ["What did I study?"]
    assert questions_from_answer("You grew up in Cork.") == ["Where did I grow up?"]
    # No question where grammar alone would ask wrong.
    assert questions_from_answer("Your flat is on the 4th floor.") == ["Where is my flat?"]  # an ordinal: no day
    assert questions_from_answer("Your meeting is at noon.") == ["When is my meeting?"]  # a time, not a place
    assert questions_from_answer("You met your wife at college.") == []  # not "What did I meet?"
    assert questions_from_answer("You used to live in Rome.") == []  # not "Where did I use?"
    assert questions_from_answer("Your son was born in 2015.") == ["When was my son born?"]  # not "What does he do?"
    assert questions_from_answer("You study at night.") == []  # "at night" is no place
    assert questions_from_answer("You fly to Oslo on the 3rd.") == []


def test_rules_ask_the_most_specific_question_grammar_allows():
    # Things had, counted or named: their names or their number, not "What do I have?".
    assert questions_from_answer("You have two dogs, Rex and Fido.") == ["What are my dogs called?",
                                                                         "How many dogs do I have?"]
    assert questions_from_answer("You have a parrot called Kiwi.") == ["What is my parrot called?"]
    assert questions_from_answer("You have three kids.") == ["How many kids do I have?"]
    assert questions_from_answer("You have two meetings, Monday and Friday.") == ["How many meetings do I have?"]
    # What something is done for, its particle kept; where work is done, with what is done there.
    assert questions_from_answer("You're saving up for a new bike.")[0] == "What am I saving up for?"
    assert questions_from_answer("You work weekend shifts at the Royal Infirmary.") == [
        "Where do I work weekend shifts?"]
    assert questions_from_answer("You live in the countryside.") == ["Where do I live?"]
    # A day a thing is done on asks when, where no other rule asks.
    assert questions_from_answer("You work from home on Fridays.") == ["When do I work from home?"]
    assert questions_from_answer("You go to your pottery class every Tuesday.") == [
        "When do I go to my pottery class?"]
    assert questions_from_answer("You visit your gran on Sundays.") == ["When do I visit my gran?"]  # not "What"
    assert questions_from_answer("Your dad retires next year.")[0] == "When does my dad retire?"
    assert questions_from_answer("Your flight to Rome is on the 14th of July.") == ["When is my flight to Rome?"]
    assert questions_from_answer("Your mum's birthday is in June.") == ["When is my mum's birthday?"]
    assert questions_from_answer("You've been learning guitar for three years.") == [
        "How long have I been learning guitar?"]
    assert questions_from_answer("You have four grandchildren, Ava and Ben.")[0] == "What are my grandchildren called?"
    assert questions_from_answer("You live with your girlfriend in a flat in Bristol.") == [
        "Where do I live with my girlfriend?"]
    # A bare number after "You're" or a person's "is" is an age; "on" + a name is a day, no place.
    assert questions_from_answer("You're 34 and you work in Leeds.")[0] == "How old am I?"
    assert questions_from_answer("Your kids are 4 and 7.")[0] == "How old are my kids?"
    assert questions_from_answer("Your son Leo is 5, he loves trains.")[0] == "How old is my son?"
    assert questions_from_answer("You're 30 minutes from work.") == []
    assert questions_from_answer("Your birthday is on Christmas Eve.") == []
    assert questions_from_answer("You're training to be a vet.") == ["What am I training to be?"]  # no place
    assert questions_from_answer("You usually get the bus at 7:50.")[0] == "What time do I usually get the bus?"
    assert questions_from_answer("You usually have eggs for breakfast.")[0] == "What do I have for breakfast?"
    assert questions_from_answer("Your grandmother turns 90 on Saturday.")[0] == "When does my grandmother turn 90?"
    assert questions_from_answer("You have 2 weeks of holiday left.") == ["How many weeks of holiday do I have?"]
    # "When did my friend move to Perth?" would hold every detail: asked without the place too.
    assert questions_from_answer("Your friend moved to Perth last year.") == [
        "When did my friend move to Perth?", "When did my friend move?"]
    # The way one has a thing asks "how".
    assert questions_from_answer("You take your tea with oat milk.")[0] == "How do I take my tea?"
    assert questions_from_answer("You like your steak rare.")[0] == "How do I like my steak?"
    assert questions_from_answer("You see your dad often.") == []
    # A condition asks what brings the outcome about; a negation before a condition asks nothing.
    assert questions_from_answer("You get headaches if you skip lunch.") == ["What makes me get headaches?"]
    assert questions_from_answer("You can't sleep if you drink tea late.") == []
    # An adjective that takes "to" asks with it; a thing named after "it's" asks what it is.
    assert questions_from_answer("You're gluten intolerant, so no bread.") == ["What am I intolerant to?"]
    assert questions_from_answer("You bought a new laptop, it's a ThinkPad.")[0] == "What is my new laptop?"


def test_a_later_clause_said_to_the_user_is_asked_about_where_the_whole_is_not():
    assert clauses("You're left-handed and you play the oboe.") == ["You're left-handed and you play the oboe.",
                                                                    "You play the oboe."]
    assert clauses("Your sister is 9, your brother is 12.") == ["Your sister is 9, your brother is 12.",
                                                                "Your brother is 12."]
    assert questions_from_answer("You're left-handed and you play the oboe.") == ["What do I play?"]
    # The whole answer's questions come first.
    assert questions_from_answer("Your dentist is Dr. Shah and your next appointment is on 3 May.") == [
        "Who is my dentist?", "What is my dentist?", "When is my next appointment?"]


def test_how_many_asks_for_what_the_answer_counts():
    sentence = "got a new phone number, it's 07700 900461."
    answer = "You got a new phone number, it's 07700 900461."
    assert rejection(sentence, "How many phone numbers does my phone have?", answer) == (
        "the answer does not count your phone")
    assert rejection("I have two cats.", "How many cats do I have?", "You have two cats.") is None
    assert rejection("I have 3 black cats.", "How many cats do I have?", "You have 3 black cats.") is None
    assert rejection("I take 50mg of sertraline.", "How many mg do I take?", "You take 50mg of sertraline.") is None
    assert rejection("I have two cats.", "How many dogs do I have?", "You have two cats.") is not None
    assert rejection("My flat is on the 4th floor.", "How many floors do my flat have?",
                     "Your flat is on the 4th floor.") == "the answer does not count your floors"  # an ordinal


def test_how_long_asks_for_a_length_of_time():
    sentence = "My passport expires on 14/02/2031."
    assert rejection(sentence, "How long have I been a passport?", "Your passport expires on 14/02/2031.") == (
        "the question asks how long, which the answer does not say")
    assert rejection("My commute is 40 minutes.", "How long is my commute?", "Your commute is 40 minutes.") is None



def test_an_occasion_is_asked_about_only_where_the_sentence_names_it():
    assert rejection("My passport expires on 14/02/2031.", "What is my birthdate?",
                     "Your passport expires on 14/02/2031.") == (
        "the question asks about a birthday, which the sentence does not mention")
    assert rejection("I was born on 3 May 1985.", "What is my birthdate?", "You were born on 3 May 1985.") is None
    assert rejection("Our anniversary is 11/22.", "When is my wedding anniversary?",
                     "Your anniversary is 11/22.") is None


def test_an_english_question_is_checked_as_english_whatever_the_note():
    # Neither the note nor its answer has an English function word; the question's opening does.
    assert rejection("Shoe size 10.5 (US).", "How many inches tall?", "Shoe size 10.5 (US).") == (
        "the answer does not count your inches")
    # "Do que ...?" opens a Portuguese question, not an English one
    assert rejection("Tenho medo de aranhas.", "Do que eu tenho medo?", "Tens medo de aranhas.") is None
    assert rejection("Shoe size 10.5 (US).", "What is my shoe size?", "Your shoe size is 10.5 (US).") is None


def test_a_job_is_asked_for_only_where_the_answer_names_one():
    assert rejection("Work from home on Fridays.", "What is my job?", "You work from home on Fridays.") == (
        "the question asks for a job the answer does not name")
    assert rejection("I work as a nurse at St Mary's.", "What is my job?", "You work as a nurse at St Mary's.") is None
    assert rejection("I'm a pilot.", "What is my job?", "You're a pilot.") is None


def test_every_shot_passes_the_check():
    """The model copies its examples: an example the check would reject teaches rejects."""
    for sentence, question, answer in shots():
        assert rejection(sentence, question, answer) is None, sentence


class _Scripted:
    """An engine that writes the given completions in turn, one per prompt."""

    def __init__(self, completions: list[str]) -> None:
        self.completions = list(completions)
        self.prompts: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def continue_text_samples(self, prompt, max_tokens, temperature, top_p, seeds, stop=()):
        assert temperature == 0.0 and list(seeds) == [0]  # greedy: one deterministic completion
        self.prompts.append(prompt)
        return [self.completions.pop(0)]


def test_the_first_passing_candidate_is_taken():
    # No rule asks for "Your move to Porto was in 2023.": the model writes the pair.
    engine = _Scripted([" Your move to Porto.\nQuestion: When did I move to Porto?",
                        " When did I move to Porto?\nAnswer: Your move to Porto was in 2023."])
    assert pair_from_fact(engine, "My move to Porto was in 2023") == FactPair("When did I move to Porto?",
                                                                              "Your move to Porto was in 2023.")
    assert engine.prompts[0].endswith("Fact: My move to Porto was in 2023.\nAnswer:")
    assert engine.prompts[1].endswith("Fact: My move to Porto was in 2023.\nQuestion:")


def test_emoji_and_chat_asides_stay_out_of_the_pair():
    said = lambda text: as_sentence(tidy(text))  # noqa: E731  (as pair_from_fact reads a sentence)
    assert said("i have two cats, Pickle and Mango 🐱🐈‍⬛") == "i have two cats, Pickle and Mango."
    assert said("my partner Leo is vegan lol, and I'm not haha!!") == "my partner Leo is vegan, and I'm not!"
    assert said("I play football (usually in goal LOL)") == "I play football (usually in goal)."
    assert said("I'm off to Rome :) in May <3") == "I'm off to Rome in May."
    assert said("vegan :). 1️⃣ cat 😂.") == "vegan. 1 cat."
    assert said("Just so you know, I take 50mg of sertraline.") == "I take 50mg of sertraline."
    assert said("My mom's birthday is March 14th, don't let me forget lol") == "My mom's birthday is March 14th."
    assert said("I remember that my dad was 6 ft tall.") == "I remember that my dad was 6 ft tall."  # the fact itself
    # A name that reads like an aside, a count written "<3", music's flats and sharps and other
    # symbols that are no emoji stay.
    assert said("My dog is called Lol.") == "My dog is called Lol."
    assert said("I have <3 cats") == "I have <3 cats."
    assert said("I play in B♭ major at 20°C in Lolland for £5 a day.") == (
        "I play in B♭ major at 20°C in Lolland for £5 a day.")
    # The model reads the sentence tidied, and its answer is kept.
    engine = _Scripted([" Your move to Porto was in 2023.\nQuestion: When did I move to Porto?"])
    assert pair_from_fact(engine, "My move to Porto was in 2023 🎉🎉 lol") == FactPair(
        "When did I move to Porto?", "Your move to Porto was in 2023.")
    assert engine.prompts[0].endswith("Fact: My move to Porto was in 2023.\nAnswer:")


def test_a_question_written_to_the_user_is_asked_by_the_user():
    engine = _Scripted([" Your move to Porto was in 2023.\nQuestion: When did you move to Porto?"])
    assert pair_from_fact(engine, "My move to Porto was in 2023.") == FactPair("When did I move to Porto?",
                                                                               "Your move to Porto was in 2023.")
    assert first_person("What are you allergic to?") == "What am I allergic to?"
    assert first_person("Where do you and your wife live?") == "Where do I and my wife live?"
    assert first_person("Who told you about your flat?") == "Who told me about my flat?"


def test_an_answer_that_drops_a_detail_is_replaced_by_the_sentence_in_the_second_person():
    lossy = [" Your move to Porto.\nQuestion: When did I move to Porto?"] * 3
    assert pair_from_fact(_Scripted(lossy), "My move to Porto was in 2023.") == FactPair(
        "When did I move to Porto?", "Your move to Porto was in 2023.", swapped=True)
    assert pair_from_fact(_Scripted(lossy), "My move to Porto was in 2023.", swap=False) is None
    # A question that fails on its own is never rescued.
    bad = [" Your move to Porto.\nQuestion: Did I move to Porto in 2023?"] * 3
    assert pair_from_fact(_Scripted(bad), "My move to Porto was in 2023.") is None


@pytest.mark.slow
@pytest.mark.parametrize("sentence", ["I am 41 years old.", "I named my bike Rocket.",
                                      "My gym membership costs 35 euros a month."])
def test_the_embedded_model_writes_a_pair_that_keeps_the_details(engine, sentence):
    pair = pair_from_fact(engine, sentence)
    assert pair is not None
    assert pair.question.endswith("?")
    assert all(d.casefold() in pair.answer.casefold() for d in details_of(sentence))
    assert pair_from_fact(engine, sentence) == pair  # greedy: the same sentence, the same pair


@pytest.mark.slow
@pytest.mark.parametrize(("sentence", "question"), [
    ("I don't like coriander.", "What don't I like?"),
    ("I drive a 2015 Honda Civic.", "What do I drive?"),
    ("allergic to penicillin, found out in 2009", "What am I allergic to?"),
    ("Flying to Toronto on the 9th of August to see my cousin Aisling.", "Where am I flying?"),
    ("we bought a house on Mill Lane in 2017", "When did I buy a house on Mill Lane?"),
    ("vegan since 2015", "How long have I been vegan?"),
    ("I'm 170 cm tall and I run a lot.", "How tall am I?"),
    ("Yoga classes on Wednesdays at 6pm", "When are my yoga classes?"),
    ("favourite film is Alien, seen it 20 times", "What is my favourite film?"),
])
def test_the_embedded_model_gets_a_pair_where_it_used_to_ask(engine, sentence, question):
    """Sentences the model's own questions never fit ("What is my favorite color?" for the
    coriander): the question is made by grammar, and the answer keeps every detail."""
    pair = pair_from_fact(engine, sentence)
    assert pair is not None and pair.question == question
    assert all(d.casefold() in pair.answer.casefold() for d in details_of(sentence))
    assert pair.answer.startswith("You")
