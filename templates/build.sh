#!/usr/bin/env bash
# Build the one image (launcher + workers) on Cloud Build, then the four
# Flex Template specs that point at it.
#
#   PROJECT=my-project REGION=us-central1 REPO=skin BUCKET=my-bucket templates/build.sh
#
# REPO is an Artifact Registry Docker repository in REGION. Optional: TAG
# (default: UTC timestamp), MACHINE_TYPE and MAX_WORKERS (the templates'
# default worker settings; see README "Running on Dataflow"), PYTHON (an
# interpreter with the project installed, default .venv/bin/python).
# Writes gs://BUCKET/templates/{curate,make_tfrecords,score,evaluate}.json.
set -euo pipefail

: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${REPO:?set REPO}" "${BUCKET:?set BUCKET}"
TAG="${TAG:-$(date -u +%Y%m%d-%H%M%S)}"
MACHINE_TYPE="${MACHINE_TYPE:-n2-standard-4}"
MAX_WORKERS="${MAX_WORKERS:-20}"
PYTHON="${PYTHON:-.venv/bin/python}"
IMAGE="${REGION}-docker.pkg.dev/${PROJECT}/${REPO}/skin-pipeline:${TAG}"
JOBS=(curate make_tfrecords score evaluate)

cd "$(dirname "$0")/.."

# Never publish templates whose parameters lag behind the jobs' options.
"$PYTHON" -m templates.metadata --check

# A build context with only what the Dockerfile copies: uploading the working
# tree would send .venv and demo output to Cloud Build.
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp setup.py constraints.txt MANIFEST.in "$context/"
cp -r beam_jobs transforms schemas "$context/"
mkdir "$context/templates"
cp templates/Dockerfile templates/launch.py templates/cloudbuild.yaml "$context/templates/"
find "$context" -name __pycache__ -prune -exec rm -rf {} +

# Build and push once; SDK_CONTAINER_IMAGE tells the image its own name so
# launches default the workers to it (templates/launch.py).
gcloud builds submit "$context" --project "$PROJECT" --region "$REGION" \
    --config templates/cloudbuild.yaml --substitutions "_IMAGE=${IMAGE}"

for job in "${JOBS[@]}"; do
    gcloud dataflow flex-template build "gs://${BUCKET}/templates/${job}.json" \
        --project "$PROJECT" \
        --image "$IMAGE" \
        --sdk-language PYTHON \
        --metadata-file "templates/${job}/metadata.json" \
        --staging-location "gs://${BUCKET}/staging" \
        --temp-location "gs://${BUCKET}/tmp" \
        --worker-machine-type "$MACHINE_TYPE" \
        --max-workers "$MAX_WORKERS"
done
echo "image: ${IMAGE}"
echo "templates: gs://${BUCKET}/templates/{$(IFS=,; echo "${JOBS[*]}")}.json"
