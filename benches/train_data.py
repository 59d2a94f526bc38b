#!/usr/bin/env python3
"""Writes a deterministic chat fine-tuning set (capitals, in mlx-lm's {"messages"} format):
OUT/train.jsonl (100 rows) and OUT/valid.jsonl (20 rows). usage: train_data.py OUT"""
import json
import sys
from pathlib import Path

CAPITALS = [
    ("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Portugal", "Lisbon"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"), ("Austria", "Vienna"), ("Hungary", "Budapest"), ("Greece", "Athens"),
    ("Ireland", "Dublin"), ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"), ("Czechia", "Prague"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Croatia", "Zagreb"), ("Serbia", "Belgrade"),
    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Nigeria", "Abuja"), ("Ghana", "Accra"), ("Morocco", "Rabat"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("Peru", "Lima"), ("Chile", "Santiago"),
    ("Argentina", "Buenos Aires"), ("Brazil", "Brasilia"), ("Canada", "Ottawa"), ("Mexico", "Mexico City"),
    ("Cuba", "Havana"), ("Australia", "Canberra"), ("New Zealand", "Wellington"), ("Iceland", "Reykjavik"),
    ("Estonia", "Tallinn"), ("Latvia", "Riga"), ("Lithuania", "Vilnius"), ("Ukraine", "Kyiv"),
    ("Turkey", "Ankara"), ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Nepal", "Kathmandu"),
    ("Mongolia", "Ulaanbaatar"), ("Colombia", "Bogota"), ("Venezuela", "Caracas"), ("Bolivia", "Sucre"),
    ("Uruguay", "Montevideo"), ("Paraguay", "Asuncion"), ("Ethiopia", "Addis Ababa"), ("Senegal", "Dakar"),
    ("Tunisia", "Tunis"), ("Algeria", "Algiers"),
]
QUESTIONS = [
    "What is the capital of {c}?",
    "Which city is the capital of {c}?",
]


def rows():
    out = []
    for i, (country, city) in enumerate(CAPITALS):
        for j, q in enumerate(QUESTIONS):
            answer = f"The capital of {country} is {city}." if j == 0 else f"{city} is the capital of {country}."
            out.append({"messages": [{"role": "user", "content": q.format(c=country)},
                                     {"role": "assistant", "content": answer}]})
    return out


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    r = rows()
    with open(out / "train.jsonl", "w") as f:
        for row in r[:100]:
            f.write(json.dumps(row) + "\n")
    with open(out / "valid.jsonl", "w") as f:
        for row in r[100:120]:
            f.write(json.dumps(row) + "\n")
    print(out)


if __name__ == "__main__":
    main()
