"""The prose that piper's joe voice reads in the realistic bench recording (`bench.media`).

Ordinary narrative English, written for this project and dedicated to the
public domain (CC0): no names a synthetic voice would stumble on, no digits or
abbreviations a transcript could write two ways, so that its word error rate
measures the recogniser rather than spelling conventions. Paragraphs are
separated by blank lines; `reading_sentences` splits it into the sentences
that are synthesised one by one.
"""

from __future__ import annotations

import re

READING_TEXT = """
The harbor town woke slowly on winter mornings. Before the shops opened, the
fishing boats came back with the tide, and the men on the quay sorted the catch
into wooden boxes while the gulls waited on the roofs. A baker on the hill lit
her ovens long before dawn, and by the time the first bus arrived from the
valley, the whole street smelled of warm bread. Most people in the town knew
each other by sight, if not by name, and a stranger was noticed within the
hour.

My grandmother lived in a narrow house at the end of the harbor road. It had
a blue door, a small garden full of herbs, and a kitchen window that looked
straight out over the water. She had been a teacher for most of her life, and
even after she stopped working, she kept a careful list of everything she
meant to do each day. The list was always longer than the day, but she never
seemed to mind. She said that a list was a promise to try, not a promise to
finish.

On the first Saturday of every month, there was a market in the square. Farmers
brought apples, potatoes and cheese from the villages inland, and a man with a
gray van sold tools that nobody quite needed but everybody looked at. Children
were given a coin each to spend as they pleased. Most of them bought sweets,
but a few saved their money for the old books that an old couple laid
out on a table under the clock. I remember buying a book about the stars there,
with a torn cover and pencil notes in the margins, and reading it under the
blankets that same night.

The weather changed quickly on that part of the coast. A bright morning could
turn gray before lunch, and a storm that looked far away could reach the
harbor in less than an hour. The fishermen watched the clouds over the
headland and listened to the forecast on the radio in the tea room by the steps.
When the wind rose from the west, the boats stayed in, and the men spent the day
mending nets and painting hulls. On those days the tea room was full from morning
until evening, and the windows ran with steam.

In the spring, my grandmother decided to repair the old bicycle that had been
leaning against the shed for years. The tires were flat, the chain was brown
with rust, and one of the brakes did not work at all. She took it apart on
sheets of newspaper on the kitchen floor, cleaning every piece with a rag and a
little oil. It took her most of a week. When she finally rode it down the
harbor road, slowly and a little unsteadily, several neighbors came out of
their houses to watch, and one of them clapped.

The railway line reached the town only at the end of the last century, and the
station was still the newest building on the hill. The train to the city left
twice a day, once early in the morning and once in the afternoon. The journey
took most of the day, along the river and through the forest, with long stops
at small stations where nobody seemed to get on or off. Travelers brought
sandwiches and flasks of tea, and they talked to people they would never see
again. Some of the best stories I have ever heard were told to me on that
train.

Not everything in the town was peaceful. There were arguments about the new
road, about the price of fuel, and about whether the old lighthouse should be
turned into a museum or left alone. Meetings in the town hall went on late
into the night, and people who had been friends for years stopped speaking to
each other for a while. But when a boat was lost in a storm one autumn, the
whole town came down to the harbor together, and the arguments were forgotten
for a long time afterwards.

The lighthouse itself stood on a rock at the end of a long stone pier. Its
keeper had retired years before, and the light now switched itself on at dusk
and off at dawn. Still, the door was never locked, and on calm evenings young
people would walk out along the pier and sit on the steps to watch the sun go
down behind the islands. The stones were always cold, even in summer, and the
sea underneath made a deep, slow sound, like somebody breathing in their sleep.

Every year, at the end of the summer, the town held a festival for the
fishermen. The boats were decorated with flags and flowers, and a band played
on a wooden stage in the square. There was a race across the harbor in small
rowing boats, which the same family seemed to win every time. In the evening,
long tables were set out along the quay, and everybody ate fish that had been
caught that morning, with bread, salad and far too much cake. The music went on
until the last of the light had gone.

My grandmother kept a garden that was small but never empty. She grew beans
along the fence, lettuce in the shade of the wall, and a row of sunflowers that
were taller than the gate by the middle of August. She talked to the plants
while she worked, and she claimed that they listened. Whether or not that was
true, her tomatoes were the best on the road, and she gave most of them away.
A basket of vegetables would appear on a neighbor's doorstep without a note,
and everybody knew exactly where it had come from.

When I was older and living in the city, I wrote to her every week. My letters
were short and full of complaints about the noise, the crowds and the price of
everything. Her replies were long and calm. She wrote about the weather, the
boats, the garden and the people on the road, and she always ended with a
question that I had to think about before I could answer. I kept all of those
letters in a box under my bed, and I still read them when I cannot sleep.

The last time I visited the town, the tea room by the steps had new owners, and
the market had moved from the square to the car park behind the station. The
bakery was still there, and so was the smell of bread in the morning. I walked
along the harbor road to the house with the blue door. Somebody else lived
there now, and the garden was full of children's toys instead of herbs. I stood
at the gate for a minute, and then I walked out along the pier to the
lighthouse, sat on the cold steps, and watched the boats come in with the tide.
"""


def reading_sentences(text: str = READING_TEXT) -> list[str]:
    """The text's sentences in order, each on one line of single spaces."""
    flowing = " ".join(text.split())
    return [sentence for sentence in re.split(r"(?<=[.!?])\s+", flowing) if sentence]
